"""Stage 2, the content-addressed store (the prepare side: no torch, transformers or trl).

Takes the recipe's `model` and `data` sections; gives `<store>/<key>/` with packed Arrow rows that any
number of ranks memory-map, and a manifest that says what went in and what was dropped, and why.

    plan.py        the key: every input that changes the tokens (sources' sha256, tokenizer, template, ...)
    build.py       `smoldist prepare`: read -> convert -> encode (workers) -> pack -> write, once per key
    pair_build.py  the same for preference pairs (method dpo): pairs encoded, packed whole, `pair_ids` per row
    writer.py      rows into Arrow shards, in a temp dir renamed into place when complete
    manifest.py    the manifest: read, verified (key and shard checksums) before training, and splits loaded
    lock.py        one builder per key across ranks and nodes, waiters outside any collective
    hash_cache.py  sha256 of files remembered by stat: a start-up costs a stat per unchanged file
    report.py      the summary table, report.json and report.png
    system_prompt.py  the one system prompt training used, made the saved template's default
    preview.py     `smoldist preview`: the first records as the model will see them
"""
