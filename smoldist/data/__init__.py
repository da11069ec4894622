"""Stage 1, records to tokens (the prepare side: no torch, transformers or trl).

Takes the recipe's `data` and `model` sections; gives token buffers with loss masks, packed into rows.

    sources.py      where records come from (files, saved datasets, the hub), each with its position
    records.py      records cut into batches, converted in workers, counted back in source order
    converters.py   one record -> a conversation or a text (messages, sharegpt, gsm8k, columns, ...)
    document.py     what a record becomes (a Document), and the reasons one is invalid
    turns.py        one exported message: content parts, tool calls, weights, keys it holds that are not read
    templates/      chat templates with {% generation %} markers, and the renderers that use them
    tokenizer.py    the Rust tokenizer, its special tokens and its content hash
    encode.py       render + tokenize + loss mask in batches; the on-disk token buffer
    turn_split.py   a conversation over seq_len cut at its turns, each piece with its context
    worker_pool.py  an ordered map over forked workers (convert + encode run there)
    packing.py      overflow policies and packing (BFD, wrapped, none) into rows of seq_len
    preference.py   `format: preference`: a record -> prompt, chosen, rejected -> two scored token sequences
    pair_packing.py preference pairs packed whole (both sequences in one row), over-long ones cut or dropped

The store (smoldist/store/) drives these and writes what they give.
"""
