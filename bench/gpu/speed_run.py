"""One run of speed.sh: bench/train_throughput.py for one (shape, seq_len, path, attention), merged at once into
$RESULTS (train_throughput.json) with the runs before it, so a later run that fails or overruns loses nothing.

    python bench/gpu/speed_run.py data                                     # corpus + tokenizer, once
    python bench/gpu/speed_run.py NAME --shapes 135M --seq-lens 2048 --paths smoldist --attn varlen [...]

Every run: 3 warm-up + 10 timed steps, the shared work dir $WORK/bench (corpus, tokenizer, stores built once).
SMOKE=1: train_throughput.py --cpu-smoke (tiny model, seq_len 128, CPU); a --compile run records `skipped: no cuda`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import SKIPPED_NO_CUDA, record, results_path, smoke  # noqa: E402  (bench/gpu/results.py)

WORK = Path(os.environ.get("WORK", "/tmp/smoldist-gpu-work"))


def module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    name, args = argv[0], argv[1:]
    bench = module("smoldist_train_throughput", HERE.parent / "train_throughput.py")
    common = ["--work", str(WORK / "bench"), "--warmup", "3", "--steps", "10", *(["--cpu-smoke"] if smoke() else [])]
    t = time.perf_counter()
    if name == "data":
        parsed = bench.parse_args(common)
        data = bench.build_data(parsed, (WORK / "bench").resolve())
        record(
            results_path(),
            "data",
            {"ok": True, "corpus": data, "build_s": round(time.perf_counter() - t, 1), "figures": ["build_s"]},
        )
        return 0
    if smoke() and "--compile" in args:
        record(results_path(), name, {"ok": None, "skipped": SKIPPED_NO_CUDA})
        return 0
    runs = WORK / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rc = bench.main([*common, *args, "--out", str(runs / f"train_throughput-{name}.json")])
    merge = module("smoldist_merge_results", HERE / "merge_results.py")
    files = sorted(runs.glob("train_throughput-*.json"))
    merge.main([*map(str, files), "--out", results_path()])
    record(results_path(), name, {"ok": rc == 0, "args": args})
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
