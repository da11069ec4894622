"""Stage 5, the trainer on ranks: one training run of a recipe, from its store to a saved model.

Takes the whole recipe (it is the stage that runs all the others); gives a run directory: checkpoints, the
final model in `model.dtype`, the resolved recipe, the loss curve, one W&B run per job, and per-rank reports.

    run.py          what every rank does: store -> tokenizer -> model -> trainer -> train -> save -> evaluate
    launched.py     the world the launch asked for (`accelerate launch --num_processes N`), checked first
    resume.py       which checkpoint a run continues: only its own (recipe + store key), `--fresh` to start over
    arguments.py    the trl.SFTConfig for a pre-packed store, and the accumulation a global batch needs
    trainer.py      SmoldistTrainer: SFTTrainer with honest throughput, an fp32->dtype save, stop-aware eval
    dpo_run.py      method dpo: what is refused, the reference pass before the trainer, the DPO trainer's arguments
    dpo_reference.py  reference log-probs computed once (sharded over ranks) and kept in the store for reuse
    dpo_trainer.py  DpoTrainer: SmoldistTrainer with the pair loss, averaged over the global batch's pairs
    nonfinite.py    a non-finite loss or gradient norm stops every rank at its step, before it is applied or saved
    throughput.py   real and trained tokens, data wait, FLOPs per packed batch, MFU
    eval_weighting.py  the in-training eval_loss per label token over all ranks, each eval row once
    console.py      one `smoldist |` line per log, one progress bar
    wandb_run.py    the W&B run: one per job across ranks and requeues, what it is told once
    loss_plot.py    loss.png for people not using W&B
    wandb_offline.py  a reader for offline W&B run files (tests, and people checking a run offline)

`python -m smoldist.train` (and `accelerate launch -m smoldist.train`) is `smoldist train`.
"""
