"""bench/train_throughput.py --cpu-smoke: all three training paths run, on the same data, and are measured alike."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

PATHS = {"trl-nopack", "trl-bfd", "smoldist"}


def test_cpu_smoke_runs_three_paths_on_the_same_data(tmp_path):
    out = tmp_path / "x.json"
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "train_throughput.py"),
            "--cpu-smoke",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "smoldist/trl-bfd" in p.stdout  # the table and the ratios were printed
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu-smoke" and len(result["configs"]) == 1
    config = result["configs"][0]
    paths = config["paths"]
    assert set(paths) == PATHS
    for name, r in paths.items():
        assert "error" not in r, (name, r)
        assert r["tokens_per_s"] > 0 and r["trained_tokens_per_s"] > 0, name
        assert r["timed_steps"] == 3 and r["warmup_steps"] == 1 and r["step_time_s"] > 0, name
        assert r["mfu"] is None  # no peak TFLOP/s is known for a CPU
        assert len(r["per_step"]["trained_tokens"]) == 3, name  # only the timed steps were counted
    assert set(config["ratios"]) == {"smoldist/trl-nopack", "smoldist/trl-bfd"}

    # Same data: the three prepared datasets hold exactly the same tokens and the same loss-carrying tokens
    # (same corpus, template, tokenizer and assistant mask; nothing longer than seq_len in the demo data).
    totals = {name: (r["dataset"]["tokens"], r["dataset"]["trained_tokens"]) for name, r in paths.items()}
    assert len(set(totals.values())) == 1, totals
    # Padding-free paths carry no padding; the padded one does.
    assert paths["smoldist"]["padding_fraction"] == 0 and paths["trl-bfd"]["padding_fraction"] == 0
    assert paths["trl-nopack"]["padding_fraction"] > 0

    # Same work per step for smoldist and TRL-bfd, but not the same rows: each packs the same documents with its
    # own BFD into about the same rows (both fill them alike) and the sampler draws 3 x 32 of them, so per-step
    # counts differ by sampling only. On the demo store a packed row has 27.8 +- 7.4 trained tokens (97.7 +- 26.2
    # real), so the mean of 96 drawn rows varies by ~2.5% and the difference of two such means by ~3.5% (1 sd);
    # 15% is over 4 sd, while a real mismatch (loss on every token instead of assistant turns: ~3.5x; padding or
    # lost document-start masks) lands far outside it.
    smol, bfd = paths["smoldist"], paths["trl-bfd"]
    for key in ("trained_tokens_per_step", "tokens_per_step"):
        assert abs(smol[key] / bfd[key] - 1) < 0.15, (key, smol[key], bfd[key])

    # smoldist's own perf/* logs covered the same timed steps (values are not compared: they are timings).
    assert paths["smoldist"]["logged"]["steps"] == 3


def test_cpu_smoke_runs_the_packed_paths_under_varlen(tmp_path):
    out = tmp_path / "v.json"
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "train_throughput.py"),
            "--cpu-smoke",
            "--attn",
            "varlen",
            "--paths",
            "trl-bfd,smoldist",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(out.read_text())
    (config,) = result["configs"]
    assert config["attn"] == "varlen" and set(config["paths"]) == {"trl-bfd", "smoldist"}
    assert all("error" not in r for r in config["paths"].values())
    assert result["best"][0]["paths"]["smoldist"]["attn"] == "varlen"


def test_attention_names_are_checked_before_anything_runs(tmp_path):
    bench = [
        sys.executable,
        str(REPO / "bench" / "train_throughput.py"),
        "--cpu-smoke",
        "--out",
        str(tmp_path / "x.json"),
    ]
    p = subprocess.run([*bench, "--attn", "varlen,nope"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--attn: unknown 'nope'" in p.stderr
    p = subprocess.run([*bench, "--attn", "flex_attention"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no backward on CPU" in p.stderr


def test_merge_keeps_every_stage_and_picks_each_paths_fastest_setting(tmp_path):
    def stage(name, attn, compile_, smol, bfd):
        paths = {"smoldist": {"tokens_per_s": smol, "mfu": None}, "trl-bfd": {"tokens_per_s": bfd, "mfu": None}}
        r = {
            "mode": "full",
            "device": "GPU X",
            "peak_tflops": 989,
            "versions": {},
            "corpus": {},
            "settings": {"compile": compile_},
            "configs": [{"shape": "135M", "seq_len": 2048, "attn": attn, "paths": paths}],
        }
        (tmp_path / f"train_throughput-{name}.json").write_text(json.dumps(r))
        return tmp_path / f"train_throughput-{name}.json"

    files = [stage("attn", "sdpa", False, 100.0, 90.0), stage("compile", "varlen", True, 300.0, 200.0)]
    out = tmp_path / "merged.json"
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu" / "merge_results.py"), *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    merged = json.loads(out.read_text())
    assert merged["mode"] == "full" and len(merged["configs"]) == 2
    (best,) = merged["best"]
    assert best["paths"]["smoldist"]["attn"] == "varlen+compile" and best["ratios"]["smoldist/trl-bfd"] == 1.5
