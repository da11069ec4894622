"""Recipe parsing: sections, typed overrides, unknown keys with suggestions, bad types, saved recipes."""

from __future__ import annotations

import pytest
import yaml

from smoldist.config import load_recipe, save_recipe
from smoldist.config.load import DEMO_RECIPE
from smoldist.errors import RecipeError
from tests.helpers import recipe_dict, write_recipe


def test_demo_recipe_loads():
    r = load_recipe(None)
    assert r.name == "demo" and r.model.init and r.data.sources[0].format == "messages"
    assert r.data.packing == "bfd" and r.train["output_dir"] == "runs/demo"


def test_overrides_are_typed_by_their_field(tiny_recipe):
    r = load_recipe(
        tiny_recipe,
        [
            "data.seq_len=256",
            "train.learning_rate=3e-4",
            "data.eval_fraction=0.1",
            "model.default_system_prompt=false",
            "data.sources.0.max_samples=7",
            "tracking.wandb.tags=a,b",
            "train.bf16=false",
        ],
    )
    assert r.data.seq_len == 256 and isinstance(r.data.seq_len, int)
    assert r.train["learning_rate"] == 3e-4 and isinstance(r.train["learning_rate"], float)
    assert r.data.eval_fraction == 0.1 and r.model.default_system_prompt is False
    assert r.data.sources[0].max_samples == 7 and r.tracking.wandb.tags == ["a", "b"] and r.train["bf16"] is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.seq_lenn=4", "unknown key 'data.seq_lenn'; did you mean 'seq_len'?"),
        ("model.nme_or_path=x", "did you mean 'name_or_path'?"),
        (
            "train.learnig_rate=1",
            "unknown key 'train.learnig_rate' (not a trl.SFTConfig field); did you mean 'learning_rate'?",
        ),
        ("tracking.wandb.mdoe=offline", "did you mean 'mode'?"),
        ("data.sources.0.fromat=gsm8k", "unknown key 'data.sources.0.fromat'; did you mean 'format'?"),
        ("data.packing=greedy", "data.packing: 'greedy' is not one of bfd, wrapped, none"),
        ("data.seq_len=long", "data.seq_len: expected an integer, got 'long'"),
        ("train.learning_rate=fast", "train.learning_rate: expected a number"),
        ("data.sources.0.format=alpaca", "is not one of messages, sharegpt, gsm8k, prompt_completion, columns, text"),
        ("train.max_length=99", "train.max_length: set by smoldist from data.seq_len"),
        ("data.sources.3.path=x", "data.sources has 1 items"),
        ("seq_len=4", "expected section.key=value"),
        ("data.eval_fraction=1.5", "data.eval_fraction: 1.5 must be in [0, 1)"),
    ],
)
def test_bad_overrides_name_the_key(tiny_recipe, override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe(tiny_recipe, [override])
    assert message in str(e.value)


def test_unknown_section_and_missing_file(tmp_path):
    raw = recipe_dict(tmp_path, [{"path": "x.jsonl"}])
    raw["trainer"] = {}
    with pytest.raises(RecipeError, match="unknown section 'trainer'; did you mean 'train'"):
        load_recipe(write_recipe(tmp_path, raw))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_needs_a_model_and_sources(tmp_path):
    raw = recipe_dict(tmp_path, [])
    with pytest.raises(RecipeError, match=r"data\.sources: at least one source"):
        load_recipe(write_recipe(tmp_path, raw))
    raw = recipe_dict(tmp_path, [{"path": "x.jsonl"}])
    raw["model"] = {"chat_template": "smollm2"}
    with pytest.raises(RecipeError, match=r"model\.name_or_path .* or model\.init"):
        load_recipe(write_recipe(tmp_path, raw))


def test_saved_recipe_round_trips(tiny_recipe, tmp_path):
    r = load_recipe(tiny_recipe, ["data.seq_len=64"])
    save_recipe(r, tmp_path / "saved.yaml")
    again = load_recipe(tmp_path / "saved.yaml")
    assert again.to_dict() == r.to_dict()
    assert "name" not in yaml.safe_load((tmp_path / "saved.yaml").read_text())


def test_demo_recipe_is_inside_the_package():
    assert DEMO_RECIPE.is_file() and DEMO_RECIPE.parent.name == "demo"


@pytest.mark.parametrize(
    "fmt, override, readers",
    [
        ("messages", "data.sources.0.prefix=Question-", "gsm8k, prompt_completion, columns, text"),
        ("messages", "data.sources.0.system_prompt=Be brief.", "gsm8k, prompt_completion, columns, preference"),
        ("messages", "data.sources.0.text_field=body", "text"),
        ("sharegpt", "data.sources.0.role_field=speaker", "messages, preference"),
        ("gsm8k", "data.sources.0.serialize=json", "prompt_completion"),
        ("text", "data.sources.0.completion_field=output", "prompt_completion"),
        ("preference", "data.sources.0.prefix=Question-", "gsm8k, prompt_completion, columns, text"),
        ("preference", "data.sources.0.messages_field=turns", "messages, sharegpt"),
    ],
)
def test_a_source_option_its_format_does_not_read_is_refused(tmp_path, conversations_file, fmt, override, readers):
    """Every recipe key is honoured or refused: an option the source's format never reads (a prefix on messages, a
    serialize on gsm8k) would change nothing, so it is refused in one line naming the formats that read it."""
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file), "format": fmt}])
    if fmt == "preference":
        raw["method"], raw["data"]["overflow"] = "dpo", "truncate"
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(tmp_path, raw), [override])
    key = override.split("=")[0]
    assert f"{key}: format '{fmt}' does not read it; it applies to format {readers}" in str(e.value)


def test_a_source_option_at_its_default_or_read_by_its_format_loads(tiny_recipe):
    load_recipe(tiny_recipe, ["data.sources.0.role_field=role", "data.sources.0.content_field=text"])
    load_recipe(tiny_recipe, ["data.sources.0.format=gsm8k", "data.sources.0.prefix=Question-"])
