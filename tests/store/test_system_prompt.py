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
