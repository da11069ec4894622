"""Merge per-run throughput JSONs (bench/train_throughput.py --out ...) into one train_throughput.json.

    python bench/gpu/merge_results.py RUN.json [RUN.json ...] [--out PATH]   # default: bench/results/<that name>

bench/gpu/speed.sh calls it after every run (its runs -> $OUT/train_throughput.json); what the out file already holds
besides the merged keys (speed.sh's per-step `checks`) is kept. Every config keeps its run's settings (attention,
compile, steps); `best` is recomputed over all of them, so a
path's fastest attention and compile setting per (shape, seq_len) is what the ratios compare.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "train_throughput.json"


def bench_module():
    """bench/throughput_table.py: ratios and the best-attention table, as bench/train_throughput.py computes them."""
    spec = importlib.util.spec_from_file_location("smoldist_throughput_table", HERE.parent / "throughput_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def merge(files: list[Path]) -> dict:
    runs = [(f, json.loads(f.read_text())) for f in files]
    configs = []
    for f, r in runs:
        compiled = bool(r["settings"].get("compile"))
        for c in r["configs"]:
            c = dict(c, stage=f.stem.removeprefix("train_throughput-"), compile=compiled)
            c["attn"] = c["attn"] + ("+compile" if compiled else "")  # best_attention keys on it
            configs.append(c)
    first = runs[0][1]
    modes = {r["mode"] for _, r in runs}
    return {
        "mode": modes.pop() if len(modes) == 1 else "mixed",
        "device": first["device"],
        "peak_tflops": first["peak_tflops"],
        "versions": first["versions"],
        "corpus": first["corpus"],
        "stages": {f.stem: r["settings"] for f, r in runs},
        "configs": configs,
        "best": bench_module().best_attention(configs),
    }


def main(argv: list[str]) -> int:
    out = OUT
    if "--out" in argv:
        i = argv.index("--out")
        out, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2 :]
    files = [Path(a) for a in argv if Path(a).name != out.name]
    if not files:
        print(__doc__)
        return 2
    result = merge(files)
    kept = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**kept, **result}, indent=2))
    bench_module().print_best(result["best"])
    print(f"wrote {out} ({len(result['configs'])} configs from {len(files)} files, device {result['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
