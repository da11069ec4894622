"""Stage 4, the model: built, attended, kept in fp32, adapted, stopped where a turn ends, merged.

Takes the recipe's `model` section (and the tokenizer); gives a transformers model ready for the trainer,
and the rules for what is saved.

    build.py        the transformers tokenizer; a model from the hub, a directory or a random init
    attention.py    attention on packed rows without a T x T mask (varlen, flex, sdpa)
    attention_choice.py  `auto`: the fastest attention that is exact for the model, and why, in one line
    fused_head.py   TRL's fused LM head under FSDP2: lm_head must sit in a unit some forward unshards
    precision.py    fp32 master weights under `model.dtype` autocast; the saved model in `model.dtype`
    lora.py         LoRA through peft: its config, loading runs back, the frozen-weight checksum
    added_rows.py   LoRA's rows of added tokens trained at the cost of those rows, not of the whole table
    stop_tokens.py  the template's end-of-turn token becomes eos, so generation stops there
    merge.py        `smoldist merge`: an adapter folded into its base
"""
