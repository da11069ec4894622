"""Precision: fp32 master weights under bf16 compute, and a saved model in the compute dtype.

`model.dtype: bfloat16` must train (almost) as well as fp32: at a small learning rate, Adam's
updates (~lr) are smaller than half a bf16 ulp of most weights (2^-9 x |w|), so weights stored in
bf16 lose them. With fp32 master weights the updates accumulate and only the compute is bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoldist.config import load_recipe
from smoldist.train.run import run
from tests.helpers import CONVERSATIONS, recipe_dict, write_jsonl, write_recipe


def eval_losses(tmp_path, dtype: str, extra: tuple[str, ...] = ()) -> tuple[float, float, dict]:
    data = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 10)
    raw = recipe_dict(
        tmp_path,
        [{"path": str(data)}],
        model={
            "dtype": dtype,
            "init": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 256,
                "tie_word_embeddings": True,
            },
        },
        data={"eval_fraction": 0.25},
    )
    out = tmp_path / f"run-{dtype}"
    raw["train"].update(
        output_dir=str(out),
        max_steps=12,
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        eval_strategy="steps",
        eval_steps=12,
        eval_on_start=True,
        save_steps=12,
        weight_decay=0.0,
    )
    recipe = load_recipe(write_recipe(tmp_path, raw, f"{dtype}.yaml"), list(extra))
    run(recipe)
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    return evals[0], evals[-1], state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    return {dtype: (*eval_losses(tmp, dtype), tmp / f"run-{dtype}") for dtype in ("float32", "bfloat16")}


def test_bf16_recipe_learns_as_much_as_fp32_at_a_small_learning_rate(runs):
    (f0, f1, _, _), (b0, b1, _, _) = runs["float32"], runs["bfloat16"]
    fp32_drop, bf16_drop = f0 - f1, b0 - b1
    print(
        f"eval-loss drop over 12 steps at lr 2e-5: fp32 {fp32_drop:.6f}, bf16 {bf16_drop:.6f} "
        f"({bf16_drop / fp32_drop:.1%})"
    )
    assert fp32_drop > 0
    assert bf16_drop >= 0.8 * fp32_drop, (fp32_drop, bf16_drop)


def test_bf16_recipe_keeps_fp32_checkpoints_and_saves_a_bf16_model(runs):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = runs["bfloat16"][3]
    saved = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    ckpt = out / "checkpoint-12"
    assert {t.dtype for t in load_file(str(ckpt / "model.safetensors")).values()} == {torch.float32}  # masters
    optim = torch.load(ckpt / "optimizer.pt", weights_only=False)
    states = [v for st in optim["state"].values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1]
    assert states and {v.dtype for v in states} == {torch.float32}  # Adam moments in fp32
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16  # loads in the dtype it was saved in, half the size
    fp32 = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(saved[k], fp32[k].to(torch.bfloat16)) for k in saved)  # the final weights, rounded once


def test_pure_low_precision_is_an_explicit_opt_in_that_warns(tmp_path):
    from smoldist.model.precision import PURE_LOW_PRECISION_WARNING, autocast_flags, load_dtype

    assert load_dtype("bfloat16", "float32") == "float32"
    with pytest.warns(UserWarning, match="no fp32 master copy"):
        assert load_dtype("bfloat16", "none") == "bfloat16"
    assert autocast_flags("bfloat16", "none", on_gpu=True) == {"bf16": False, "fp16": False}
    assert autocast_flags("bfloat16", "float32", on_gpu=False) == {"bf16": True, "fp16": False}
    assert "master_weights: float32" in PURE_LOW_PRECISION_WARNING


def test_push_to_hub_uploads_the_model_in_model_dtype_with_the_run_files(tmp_path, monkeypatch):
    """The hub is out of reach offline: a stand-in for huggingface_hub's API records what each upload would send.
    The final upload is the bf16 model with what the run wrote beside it (recipe, loss curve, state), pushed once."""
    from concurrent.futures import Future

    import torch
    import transformers.trainer
    from safetensors.torch import load_file

    uploads = []

    class Hub:  # only the two calls the Trainer makes; the folder is read at upload time, as the hub client would
        def create_repo(self, repo_id, **kw):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message=None, run_as_future=False, **kw):
            weights = sorted(p for p in Path(folder_path).glob("model*.safetensors"))
            uploads.append(
                (
                    commit_message,
                    {t.dtype for w in weights for t in load_file(str(w)).values()},
                    json.loads((Path(folder_path) / "config.json").read_text()).get("dtype"),
                    {p.name for p in Path(folder_path).iterdir()},
                )
            )
            done = Future()
            done.set_result(None)
            return done if run_as_future else None

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: Hub())
    data = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 5)
    raw = recipe_dict(tmp_path, [{"path": str(data)}], model={"dtype": "bfloat16"})
    raw["train"].update(push_to_hub=True, hub_model_id="smoldist-test/tiny", max_steps=2, save_steps=2)
    run(load_recipe(write_recipe(tmp_path, raw)))
    final = [u for u in uploads if u[0] != "Training in progress, step 2"]
    assert len(final) == 1, uploads  # one final push, not one per save
    _, dtypes, cfg, files = final[0]
    assert {"recipe.yaml", "loss.png", "trainer_state.json", "model.safetensors"} <= files, sorted(files)
    assert dtypes == {torch.bfloat16} and cfg == "bfloat16", uploads
    out = tmp_path / "run"
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    assert {t.dtype for t in load_file(str(out / "checkpoint-2" / "model.safetensors")).values()} == {torch.float32}
