"""The system prompt training used travels with the model: the saved template inserts it when a conversation has
none; sources with different prompts make none the default, and the prepare summary says so."""

from __future__ import annotations

from transformers.utils.chat_template_utils import render_jinja_template

from smoldist.config import load_recipe
from smoldist.store.build import prepare
from tests.helpers import recipe_dict, write_jsonl, write_recipe

PROMPT = "Answer with one JSON object. {\"quotes\": 'ok'}"


def render(template: str, msgs: list[dict], gen: bool = True) -> str:
    return render_jinja_template(conversations=[msgs], chat_template=template, add_generation_prompt=gen)[0][0]


def prepared(tmp_path, sources, verbose=False, **model):
    raw = recipe_dict(tmp_path, sources)
    raw["model"].update(model)
    r = load_recipe(write_recipe(tmp_path, raw))
    return prepare(r.model, r.data, verbose=verbose)


def test_a_sources_system_prompt_becomes_the_saved_templates_default(tmp_path):
    f = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": '{"a": 4}'}])
    res = prepared(tmp_path, [{"path": str(f), "format": "prompt_completion", "system_prompt": PROMPT}])
    assert res.manifest["counts"]["system_prompt"] == {"prompt": PROMPT, "mixed": False, "seen": [PROMPT]}
    asked = render(res.template, [{"role": "user", "content": "3+3?"}])
    assert asked == f"<|im_start|>system\n{PROMPT}<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n"
    own = [{"role": "system", "content": "Other."}, {"role": "user", "content": "x"}]
    assert render(res.template, own).startswith("<|im_start|>system\nOther.<|im_end|>")
    again = prepared(tmp_path, [{"path": str(f), "format": "prompt_completion", "system_prompt": PROMPT}])
    assert again.reused and again.template == res.template


def test_conversations_without_one_keep_the_templates_default(tmp_path):
    f = write_jsonl(
        tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    )
    res = prepared(tmp_path, [{"path": str(f)}])
    assert res.manifest["counts"]["system_prompt"]["prompt"] is None
    assert "You are a helpful AI assistant named SmolLM" in render(res.template, [{"role": "user", "content": "x"}])


def test_different_prompts_make_none_the_default_and_say_so(tmp_path, capsys):
    f = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": "4"}])
    sources = [
        {"path": str(f), "format": "prompt_completion", "system_prompt": PROMPT},
        {"path": str(f), "format": "prompt_completion", "system_prompt": "Be terse."},
    ]
    res = prepared(tmp_path, sources, verbose=True, chat_template="chatml")
    assert res.manifest["counts"]["system_prompt"]["mixed"] is True
    assert render(res.template, [{"role": "user", "content": "x"}]).startswith("<|im_start|>user\nx")
    assert "trained with different system prompts" in capsys.readouterr().out


def preference_prepared(tmp_path, records, model=None, **source):
    f = write_jsonl(tmp_path / "pairs.jsonl", records)
    raw = recipe_dict(tmp_path, [{"path": str(f), "format": "preference", **source}], data={"overflow": "truncate"})
    raw["method"] = "dpo"
    raw["model"].update(model or {})
    r = load_recipe(write_recipe(tmp_path, raw))
    return prepare(r.model, r.data, verbose=False)


def test_preference_pairs_with_one_system_prompt_make_it_the_saved_default(tmp_path):
    pairs = [{"prompt": f"{k}+1?", "chosen": f"{k + 1}", "rejected": "no"} for k in range(4)]
    res = preference_prepared(tmp_path, pairs, system_prompt=PROMPT)
    assert res.manifest["counts"]["system_prompt"] == {"prompt": PROMPT, "mixed": False, "seen": [PROMPT]}
    asked = render(res.template, [{"role": "user", "content": "3+3?"}])
    assert asked.startswith(f"<|im_start|>system\n{PROMPT}<|im_end|>\n<|im_start|>user\n3+3?")
    # written in the data: a system turn opening each prompt (the implicit form)
    system = {"role": "system", "content": "Be terse."}
    implicit = [
        {
            "chosen": [system, {"role": "user", "content": f"{k}?"}, {"role": "assistant", "content": "yes"}],
            "rejected": [system, {"role": "user", "content": f"{k}?"}, {"role": "assistant", "content": "no"}],
        }
        for k in range(4)
    ]
    res = preference_prepared(tmp_path, implicit)
    assert res.manifest["counts"]["system_prompt"]["prompt"] == "Be terse."
    assert render(res.template, [{"role": "user", "content": "x"}]).startswith("<|im_start|>system\nBe terse.")


def sft_output(tmp_path, prompt: str):
    """A folder with the tokenizer an SFT run trained with one fixed system prompt saves (store/system_prompt.py)."""
    from transformers import AutoTokenizer

    from smoldist.config.recipe import resolve_path
    from smoldist.data.templates import load_template, with_default_system

    tok = AutoTokenizer.from_pretrained(resolve_path("pkg:demo/tokenizer"))
    tok.chat_template = with_default_system(load_template("smollm2"), prompt)
    tok.save_pretrained(tmp_path / "sft")
    return tmp_path / "sft"


def test_a_run_from_an_sft_output_keeps_its_trained_system_prompt(tmp_path):
    """Starting from a run whose saved template inserts its trained prompt, the recipe's same bundled template trains
    and saves with that default: the pairs' prompts open with it, and so does the saved template."""
    from tokenizers import Tokenizer

    from smoldist.store.manifest import load_split

    pairs = [{"prompt": f"{k}+1?", "chosen": f"{k + 1}", "rejected": "no"} for k in range(4)]
    sft = {"tokenizer": str(sft_output(tmp_path, PROMPT))}
    res = preference_prepared(tmp_path, pairs, sft)
    asked = render(res.template, [{"role": "user", "content": "3+3?"}])
    assert asked.startswith(f"<|im_start|>system\n{PROMPT}<|im_end|>\n<|im_start|>user\n3+3?")
    row = load_split(res.path, "train")[0]
    text = Tokenizer.from_file(sft["tokenizer"] + "/tokenizer.json").decode(row["input_ids"], skip_special_tokens=False)
    assert text.startswith(f"<|im_start|>system\n{PROMPT}<|im_end|>") and "SmolLM" not in text
    # with one system prompt of its own, the DPO data's prompt is the saved default
    res = preference_prepared(tmp_path, pairs, sft, system_prompt="Be terse.")
    assert render(res.template, [{"role": "user", "content": "x"}]).startswith("<|im_start|>system\nBe terse.")
