"""One run of speed.sh: bench/train_throughput.py for one (shape, seq_len, path, attention), merged at once into
$RESULTS (train_throughput.json) with the runs before it, so a later run that fails or overruns loses nothing.

    python bench/gpu/speed_run.py data                                     # corpus + tokenizer, once
    python bench/gpu/speed_run.py NAME --shapes 135M --seq-lens 2048 --paths smoldist --attn varlen [...]
    python bench/gpu/speed_run.py NAME --dpo --paths smoldist,smoldist-sweep      # bench/dpo_throughput.py

Every run: 3 warm-up + 10 timed steps, the shared work dir $WORK/bench (corpus, tokenizer, stores built once).
SMOKE=1: train_throughput.py --cpu-smoke (tiny model, seq_len 128, CPU); a --compile run records `skipped: no cuda`.
DPO runs: the 135M shape (random init, the corpus's tokenizer) on DPO_PAIRS gsm8k pairs at 1024, one epoch per path,
whole processes, the store and model shared by the DPO steps in $WORK/dpo (SMOKE=1: the tiny shape, the demo
tokenizer, fewer pairs).
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
DPO_PAIRS = 400  # ~170k tokens: an epoch of the 135M shape in seconds on a GPU, so whole-process costs show too


def dpo(name: str, args: list[str]) -> int:
    """One DPO step: bench/dpo_throughput.py for the given --paths, its rows recorded into $RESULTS."""
    import json

    bench = module("smoldist_dpo_throughput", HERE.parent / "dpo_throughput.py")
    shape = ["--init", "tiny", "--pairs", "24"] if smoke() else ["--init", "135M", "--pairs", str(DPO_PAIRS)]
    tokenizer = "pkg:demo/tokenizer" if smoke() else str((WORK / "bench" / "tokenizer").resolve())
    out = WORK / "runs" / f"dpo-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    common = [*shape, "--tokenizer", tokenizer, "--seq-len", "1024", "--rows", "4", "--trl-batch", "8"]
    rc = bench.main([*common, "--work", str(WORK / "dpo"), "--out", str(out), *args])
    found = json.loads(out.read_text()) if out.is_file() else {}
    rows = {
        r["path"]: {k: r.get(k) for k in ("seconds", "tokens_per_s", "reference_s")} for r in found.get("results", [])
    }
    record(results_path(), name, {"ok": rc == 0 and bool(rows), "dpo": rows, "store": found.get("store"), "args": args})
    if results_path():  # the speed-ups over the DPO steps so far: TRL's seconds over smoldist's, per baseline
        checks = json.loads(Path(results_path()).read_text())["checks"]
        seconds = {p: r["seconds"] for c in checks.values() for p, r in c.get("dpo", {}).items() if r.get("seconds")}
        ratios = {
            f"{trl}/{ours}": round(seconds[trl] / seconds[ours], 2)
            for trl in ("trl", "trl-precompute")
            for ours in ("smoldist", "smoldist-sweep")
            if trl in seconds and ours in seconds
        }
        record(results_path(), name, {}, top={"dpo_speedup": ratios})
    return rc


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
    if "--dpo" in args:
        return dpo(name, [a for a in args if a != "--dpo"])
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
