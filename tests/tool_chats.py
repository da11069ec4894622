"""Tool-calling conversations as OpenAI exports them, and the check that a template's tokens and masks are exact."""

from __future__ import annotations

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(city: str, as_string: bool = False) -> dict:
    args = f'{{"city": "{city}"}}' if as_string else {"city": city}
    return {"id": f"call_{city}", "type": "function", "function": {"name": "get_weather", "arguments": args}}


def tool_record(weight0: bool = False, parts: bool = False) -> dict:
    """A user asks, the assistant calls a tool (content null), the tool replies, the assistant answers."""
    ask = (
        [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}] if parts else "Weather in Paris?"
    )
    msgs = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": ask},
        {"role": "assistant", "content": None, "tool_calls": [call("Paris")]},
        {"role": "tool", "tool_call_id": "call_Paris", "name": "get_weather", "content": '{"temp_c": 18}'},
        {"role": "assistant", "content": "18 °C in Paris."},
        {"role": "user", "content": "And Rome and Oslo?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [call("Rome", True), call("Oslo")]},
        {"role": "tool", "tool_call_id": "call_Rome", "content": '{"temp_c": 24}'},
        {"role": "tool", "tool_call_id": "call_Oslo", "content": '{"temp_c": 3}'},
        {"role": "assistant", "content": "Rome 24 °C, Oslo 3 °C.", **({"weight": 0} if weight0 else {})},
    ]
    return {"messages": msgs, "tools": [WEATHER]}


def assert_exact_with_tools(folder, template: str, eot: str, docs: list, chat_template: str = "tokenizer") -> None:
    """Each document's tokens are apply_chat_template(messages, tools=...)'s, and its trained tokens are exactly its
    trained assistant turns as the template writes them (each up to and including the end-of-turn token)."""
    from transformers import AutoTokenizer

    from smoldist.config import ModelConfig
    from smoldist.data.encode import Encoder
    from smoldist.data.tokenizer import load_prep_tokenizer

    tok = load_prep_tokenizer(ModelConfig(tokenizer=str(folder), init={"hidden_size": 8}, chat_template=chat_template))
    hf = AutoTokenizer.from_pretrained(str(folder))
    hf.chat_template = template
    batch = Encoder.for_template(tok, template, "assistant").encode(docs)
    start = 0
    for doc, n in zip(docs, batch.lengths.tolist()):
        ids, labels = batch.ids[start : start + n].tolist(), batch.labels[start : start + n].tolist()
        start += n
        assert ids == list(
            hf.apply_chat_template(doc.messages, tools=doc.tools, tokenize=True, return_dict=True)["input_ids"]
        )
        runs, cur = [], []
        for t, lab in zip(ids, labels):
            if lab != -100:
                cur.append(t)
            elif cur:
                runs.append(tok.decode(cur)), cur.clear()
        runs += [tok.decode(cur)] if cur else []
        expected = []
        for i, m in enumerate(doc.messages):
            if m["role"] != "assistant" or i in doc.untrained:
                continue
            head = hf.apply_chat_template(doc.messages[:i], tools=doc.tools, tokenize=False, add_generation_prompt=True)
            whole = hf.apply_chat_template(doc.messages[: i + 1], tools=doc.tools, tokenize=False)
            turn = whole[len(head) :]
            expected.append(turn[: turn.rindex(eot) + len(eot)])
        assert runs == expected
