"""W&B: one run per job read back from the offline file, honest throughput keys, MFU arithmetic,
auto/disabled modes, resumed runs continue the same run id, and no API key leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from smoldist.distributed.preemption import STOPPED_EXIT_CODE
from smoldist.faults import SIGNAL_AT_STEP
from smoldist.train.throughput import FlopModel, batch_stats
from smoldist.train.wandb_offline import read_run
from tests.helpers import REPO

PERF = [
    "perf/tokens_per_s_per_device",
    "perf/trained_tokens_per_s_per_device",
    "perf/step_time_s",
    "perf/data_wait_fraction",
    "perf/mfu",
    "perf/tflops_per_device",
    "perf/peak_memory_gib",
]
SECRET = "wandb-secret-0123456789abcdef"


def train(recipe, out, *overrides, env=None, home=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    full.update(HOME=str(home or Path(out).parent / "home"), **(env or {}))
    Path(full["HOME"]).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "smoldist", "train", str(recipe), f"train.output_dir={out}", *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full,
        timeout=300,
    )


def run_files(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))


OFFLINE = ["tracking.wandb.mode=offline", "tracking.peak_tflops=0.5", "train.max_steps=4", "train.logging_steps=2"]


def test_offline_run_has_one_run_with_loss_and_throughput_at_every_log(tiny_recipe, tmp_path):
    p = train(tiny_recipe, tmp_path / "run", *OFFLINE, env={"WANDB_API_KEY": SECRET})
    assert p.returncode == 0, p.stderr[-3000:]
    files = run_files(tmp_path / "run")
    assert len(files) == 1
    run = read_run(files[0])
    assert run.run_id == (tmp_path / "run" / "wandb_run_id").read_text().strip()
    logs = [h for h in run.history if "train/loss" in h]
    assert [h["train/global_step"] for h in logs] == [2, 4]
    for h in logs:
        for key in PERF:
            assert f"train/{key}" in h, key
        assert h["train/perf/tokens_per_s_per_device"] > 0 and 0 < h["train/perf/mfu"] < 1
    assert run.config["smoldist/store"]["key"] in str(sorted((tmp_path / "store").iterdir()))
    assert run.config["smoldist/world_size"] == 1 and run.config["smoldist/engine"] == "single"
    assert "smoldist | step 2 | loss" in p.stdout  # the same numbers on the console
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    # the API key is in no file the run wrote
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_resumed_run_continues_the_same_run_without_repeated_steps(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    first = train(tiny_recipe, out, *OFFLINE, "train.max_steps=6", "train.logging_steps=1", env={SIGNAL_AT_STEP: "3"})
    assert first.returncode == STOPPED_EXIT_CODE, first.stderr[-3000:]
    second = train(tiny_recipe, out, *OFFLINE, "train.max_steps=6", "train.logging_steps=1")
    assert second.returncode == 0, second.stderr[-3000:]
    runs = [read_run(f) for f in run_files(out)]
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 1  # two sessions of one run
    steps = [h["train/global_step"] for r in runs for h in r.history if "train/loss" in h]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_auto_mode_without_credentials_goes_offline_and_says_so(tiny_recipe, tmp_path):
    p = train(tiny_recipe, tmp_path / "run", "tracking.wandb.mode=auto", "train.max_steps=1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no W&B credentials found; logging offline" in p.stdout and "wandb sync" in p.stdout
    assert len(run_files(tmp_path / "run")) == 1


def test_disabled_mode_writes_nothing(tiny_recipe, tmp_path):
    p = train(tiny_recipe, tmp_path / "run", "tracking.wandb.mode=disabled", "train.max_steps=1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / "wandb_run_id").exists()


def llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(cfg)


def test_mfu_flops_by_hand():
    for tied in (True, False):
        model = llama(tied)
        # by hand: per layer q,o: 16x16 each, k,v: 16x8 each, mlp: 3 x 16x32, two RMSNorm weights of 16
        per_layer = 2 * 16 * 16 + 2 * 16 * 8 + 3 * 16 * 32 + 2 * 16
        n = 2 * per_layer + 16 + 100 * 16  # final norm + the LM head matrix (the embedding is used as a lookup)
        fm = FlopModel.of(model)
        assert fm.n_matmul_params == n and fm.layers == 2 and fm.attn_width == 16
        # a packed row with documents of 3 and 5 tokens
        inputs = {
            "labels": torch.tensor([[-100, 1, 2, -100, 4, -100, 6, 7]]),
            "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]]),
        }
        real, trained, sq = batch_stats(inputs)
        assert (real, trained, sq) == (8, 5, 3 * 3 + 5 * 5)
        assert fm.flops(real, sq) == 6 * n * 8 + 12 * 2 * 16 * (9 + 25)


def test_packed_formula_agrees_with_the_non_packed_one_for_one_document_per_row():
    fm = FlopModel.of(llama(True))
    seq = 64
    inputs = {"labels": torch.ones(1, seq, dtype=torch.long), "position_ids": torch.arange(seq).unsqueeze(0)}
    real, _, sq = batch_stats(inputs)
    non_packed = 6 * fm.n_matmul_params * seq + 12 * fm.layers * fm.attn_width * seq * seq  # 6NT + 12 L d S^2 per row
    assert fm.flops(real, sq) == non_packed
    padded = {
        "labels": torch.ones(2, seq, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * seq, [1] * 10 + [0] * 54]),
    }
    assert batch_stats(padded)[0] == seq + 10  # padding is not throughput


def test_offline_run_names_its_folder_and_the_sync_command(tiny_recipe, tmp_path):
    p = train(tiny_recipe, tmp_path / "run", "tracking.wandb.mode=offline", "train.max_steps=1")
    assert p.returncode == 0, p.stderr[-3000:]
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")  # the real run wandb wrote
    assert f"W&B offline run: {folder}; upload it with: wandb sync {folder}" in p.stdout, p.stdout[-2000:]
