"""Merge the per-stage throughput JSONs of bench/gpu/run_all.sh into bench/results/train_throughput.json.

    python bench/gpu/merge_results.py FILES_AT/train_throughput-*.json [--out PATH]   # the files the device sent back

Every config keeps its stage's settings (attention, compile, steps); `best` is recomputed over all of them, so a
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
    spec = importlib.util.spec_from_file_location("smoldist_train_throughput", HERE.parent / "train_throughput.py")
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
    return {"mode": "full" if all(r["mode"] == "full" for _, r in runs) else "mixed", "device": first["device"],
            "peak_tflops": first["peak_tflops"], "versions": first["versions"], "corpus": first["corpus"],
            "stages": {f.stem: r["settings"] for f, r in runs}, "configs": configs,
            "best": bench_module().best_attention(configs)}


def main(argv: list[str]) -> int:
    out = OUT
    if "--out" in argv:
        i = argv.index("--out")
        out, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    files = [Path(a) for a in argv if Path(a).name != out.name]
    if not files:
        print(__doc__)
        return 2
    result = merge(files)
    out.write_text(json.dumps(result, indent=2))
    bench_module().print_best(result["best"])
    print(f"wrote {out} ({len(result['configs'])} configs from {len(files)} files, device {result['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
