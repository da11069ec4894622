"""Stage 6, scoring: did the model get better? (it never imports the training run)

Takes a saved model or run directory; gives gsm8k exact match, your own task's exact or JSON match, the
held-out loss of the store the run trained on, a verdict against the model the run started from, and chat replies.

    gsm8k.py       questions with gold `#### N` answers, asked through the chat template, scored exactly
    task.py        your own task: prompts with gold completions, exact match or JSON (parses, equal as objects)
    generate.py    greedy generation that stops where a turn ends; `smoldist chat`
    loss.py        the per-token mean loss over a store's eval split
    dpo_loss.py    preference pairs: packed per-document log-probs, TRL's DPO losses and metrics (train and eval)
    compare.py     the run against its base on the same questions or rows: a verdict with a sign test
    end_of_run.py  `tracking.eval`: the saved model scored at the end of training, logged to W&B
    results.py     results as JSON, and the gsm8k table
"""
