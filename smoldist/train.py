"""`smoldist train`: train with TRL's SFTTrainer on a prepared store, at any scale.

    smoldist train                                               # the bundled demo, one process
    smoldist train launch/smollm2-135m/smoltalk.yaml train.learning_rate=1e-4
    python -m smoldist.train RECIPE [overrides]                  # the same code
    accelerate launch -m smoldist.train RECIPE [overrides]       # many processes

Stages: recipe -> store (prepared once, by one process under a file lock, if missing) -> tokenizer -> model
-> SFTConfig -> SFTTrainer -> train (auto-resume from the last checkpoint) -> save.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from smoldist.config import Recipe, save_recipe
from smoldist.errors import RecipeError


def gradient_accumulation(global_batch_tokens: int | None, per_device_rows: int, seq_len: int, world_size: int) -> int:
    """Accumulation steps that make one optimiser step see `global_batch_tokens` at this world size."""
    if global_batch_tokens is None:
        return 1
    micro = per_device_rows * seq_len * world_size
    if global_batch_tokens % micro:
        raise RecipeError(
            f"train.global_batch_tokens: {global_batch_tokens} is not a multiple of per_device_train_batch_size x seq_len x "
            f"world size = {per_device_rows} x {seq_len} x {world_size} = {micro}; pick a multiple of {micro}"
        )
    return global_batch_tokens // micro


def train_defaults(recipe: Recipe) -> dict:
    """smoldist's defaults for `train` keys that more than one stage reads (one source for both)."""
    import torch

    # without use_cpu, CPU ranks run as independent copies
    return {"output_dir": f"runs/{recipe.name}", "use_cpu": not torch.cuda.is_available()}


def eval_rows(attn_implementation: str, train_rows: int) -> int:
    """Eval rows per device: one packed row with sdpa/eager (their mask is (rows x seq_len)^2), else as in training."""
    from smoldist.attention import DENSE_MASK

    return 1 if attn_implementation in DENSE_MASK else train_rows


def sft_config(recipe: Recipe, world_size: int, report_to: list[str]):
    """The trl.SFTConfig for a pre-packed store: TRL must not re-template, re-tokenize or re-pack."""
    import torch
    from trl import SFTConfig

    from smoldist.precision import autocast_flags

    train = {**train_defaults(recipe), **recipe.train}
    gbt = train.pop("global_batch_tokens", None)
    rows = train.setdefault("per_device_train_batch_size", 8)
    train.setdefault("per_device_eval_batch_size", eval_rows(recipe.model.attn_implementation, rows))
    on_gpu = torch.cuda.is_available() and not train["use_cpu"]
    for key, value in autocast_flags(recipe.model.dtype, recipe.model.master_weights, on_gpu).items():
        train.setdefault(key, value)  # autocast to model.dtype over fp32 weights (smoldist/precision.py)
    train.setdefault("report_to", report_to)
    train.setdefault("ddp_find_unused_parameters", False)  # every parameter is used; True costs a graph walk per step
    # transformers 5.2x renamed gradient_checkpointing (older 5.x, e.g. 5.17, has only the old name); TRL's default is on
    on = train.pop("gradient_checkpointing", train.pop("activation_checkpointing", True))
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    train["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = on
    return SFTConfig(
        **train,
        gradient_accumulation_steps=gradient_accumulation(gbt, rows, recipe.data.seq_len, world_size),
        max_length=recipe.data.seq_len,
        packing=True,  # rows are packed already; with skip_prepare_dataset this only selects padding-free batches
        packing_strategy="bfd",
        padding_free=True,
        assistant_only_loss=False,  # labels in the store already carry the mask
        dataset_kwargs={"skip_prepare_dataset": True},
    )


def lora_extra(model, recipe: Recipe) -> dict:
    """For LoRA runs, each rank also records a checksum of the frozen base weights (they must not move)."""
    if recipe.model.lora is None:
        return {}
    from smoldist.lora import frozen_checksum

    return {"frozen_sha256": frozen_checksum(model)}


def log_image(key: str, path) -> None:
    import wandb

    if path is not None and wandb.run is not None:
        wandb.run.log({key: wandb.Image(str(path))}, commit=False)


FINISH_DELAY_ENV = "SMOLDIST_TEST_WANDB_FINISH_DELAY_S"  # testing aid: a W&B finish as slow as an online one


def finish_wandb() -> None:
    import wandb

    if wandb.run is not None:
        if delay := float(os.environ.get(FINISH_DELAY_ENV, "0")):
            import time

            time.sleep(delay)
        wandb.finish()


def engine_name(trainer) -> str:
    """What actually ran: 'ddp', 'deepspeed-zero3', 'fsdp2', 'single' (recorded per rank)."""
    state = trainer.accelerator.state
    kind = str(state.distributed_type).split(".")[-1].lower()
    if kind == "deepspeed":
        return f"deepspeed-zero{state.deepspeed_plugin.zero_stage}"
    if kind == "fsdp":
        return f"fsdp{getattr(state.fsdp_plugin, 'fsdp_version', 1)}"
    return {"multi_gpu": "ddp", "multi_cpu": "ddp", "no": "single"}.get(kind, kind)


def run(recipe: Recipe) -> dict:
    """Train `recipe` in this process (one rank of a launch, or alone). Returns the final metrics."""
    from smoldist.preemption import StopFlag

    stop = StopFlag()
    try:
        return _run(recipe, stop)
    finally:
        stop.restore()  # the process's previous signal handlers come back, however training ended


def _run(recipe: Recipe, stop) -> dict:
    from smoldist.elastic import ElasticResume, check_resume_world, prepare_resume
    from smoldist.distributed import EXPECTED_WORLD_ENV, check_world, dist_info, print0, write_rank_report
    from smoldist.model import build_model
    from smoldist.stop_tokens import set_stop_tokens
    from smoldist.preemption import PreemptionCallback, last_complete_checkpoint, requeue_slurm_job
    from smoldist.prepare import prepare
    from smoldist.store import load_split
    from smoldist.tokenizer import load_hf_tokenizer
    from smoldist.throughput import FlopModel, ThroughputMeter, device_peak_tflops
    from smoldist.tracking import RunInfoCallback, configure_wandb, plot_loss_curve, run_info
    from smoldist.trainer import SmoldistTrainer, StepCounter
    from smoldist.console import quiet_console
    from smoldist.lora import count_parameters

    # ---- distributed state and the prepared store (built once, by the main process)
    defaults = {**train_defaults(recipe), **recipe.train}
    dist = dist_info(cpu=defaults["use_cpu"],
                     timeout_s=recipe.train.get("ddp_timeout", 1800))  # the group is created here, with the recipe's timeout
    expected = os.environ.get(EXPECTED_WORLD_ENV)
    check_world(dist, int(expected) if expected else None)
    output_dir = defaults["output_dir"]
    # a checkpoint from another world size: refuse now, before anything loads, if this world cannot take the batch
    resume = last_complete_checkpoint(output_dir)
    resumed_world = resume and check_resume_world(resume, recipe.train.get("global_batch_tokens"),
                                                  recipe.train.get("per_device_train_batch_size", 8),
                                                  recipe.data.seq_len, dist.world_size)
    # one process builds a missing store under a file lock; the others poll for it outside any collective,
    # so a build longer than ddp_timeout cannot time the job out (smoldist/store_lock.py)
    store = prepare(recipe.model, recipe.data, verbose=dist.is_main, verify_shards=dist.is_main)
    train_ds, eval_ds = load_split(store.path, "train"), load_split(store.path, "eval")

    # ---- tokenizer (with the template the store was built with) and model
    tokenizer = load_hf_tokenizer(recipe.model)
    tokenizer.chat_template = store.template
    report_to = configure_wandb(recipe.tracking.wandb, recipe.name, output_dir, dist.is_main)
    if recipe.model.init:  # a random init is built whole: under zero.Init its values would depend on the world size
        model = build_model(recipe.model, tokenizer)
        args = sft_config(recipe, dist.world_size, report_to)
    else:  # the trainer's arguments first: under ZeRO-3 they register its config, so pretrained weights load partitioned
        args = sft_config(recipe, dist.world_size, report_to)
        model = build_model(recipe.model, tokenizer)
    built_partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    if any(src.format != "text" for src in recipe.data.sources):  # chat turns are trained: stop where they end
        stops = set_stop_tokens(tokenizer, model, store.template)
        if stops and stops.changed:
            print0(f"smoldist train: the saved model stops at {stops.end_of_turn} (end of an assistant turn; the "
                   f"tokenizer's eos was {stops.previous_eos}); pad is {stops.pad}")

    # ---- trainer
    if eval_ds is None and args.eval_strategy != "no":
        raise RecipeError("train.eval_strategy: set, but the store has no eval split; set data.eval_fraction > 0")
    stop.install()  # SIGUSR1 / SIGTERM: finish the step, checkpoint, stop (and requeue under Slurm)
    preemption = PreemptionCallback(stop)
    lora = None
    if recipe.model.lora is not None:  # TRL wraps the model in a peft.PeftModel (frozen base + adapter)
        from smoldist.lora import peft_config, pin_base_path

        pin_base_path(model)
        lora = peft_config(recipe.model.lora)
    trainer = SmoldistTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                              callbacks=[preemption, ElasticResume(resumed_world, dist.world_size)],
                              peft_config=lora)
    quiet_console(trainer)  # one line per log on screen; the dicts stay in trainer_state.json and W&B
    trainer.meter = meter = ThroughputMeter(FlopModel.of(trainer.model), device_peak_tflops(recipe.tracking.peak_tflops),
                                            dist.world_size)  # counted after peft: trainable weights decide the FLOPs
    trainer.add_callback(StepCounter(meter))
    trainer.ship_dtype = recipe.model.dtype  # fp32 masters trained; the final model ships in model.dtype
    trainer.add_callback(RunInfoCallback(run_info(recipe.to_dict(), store.manifest, dist.world_size, engine_name(trainer),
                                                  trainer.accelerator.state), store.path / "report.png"))
    n_params, n_trainable = count_parameters(trainer.model)
    trained = "" if n_trainable == n_params else f" ({n_trainable / 1e6:.3f} M trainable: LoRA)"
    print0(f"smoldist train: {recipe.name}: {n_params / 1e6:.2f} M parameters{trained}"
           f"{' (built partitioned, ZeRO-3 zero.Init)' if built_partitioned else ''}, world size {dist.world_size}, "
           f"{len(train_ds):,} rows x {recipe.data.seq_len} tokens, grad accumulation {args.gradient_accumulation_steps}, "
           f"store {store.path}")

    # ---- train, resuming from the last complete checkpoint in output_dir
    if resume:
        print0(f"smoldist train: resuming from {resume}")
        for line in prepare_resume(trainer, resume, resumed_world, dist.world_size, dist.is_main):
            print0(f"smoldist train: {line}")
    result = trainer.train(resume_from_checkpoint=resume)
    if preemption.stopped_at is not None:
        print0(f"smoldist train: stopped by signal {stop.signum} after step {preemption.stopped_at}; "
               f"checkpoint saved in {args.output_dir}; run again to resume")
        # requeue FIRST: nothing slow (W&B's finish can take seconds online) may stand between the checkpoint and it
        if dist.is_main and requeue_slurm_job():
            print0(f"smoldist train: requeued Slurm job {os.environ['SLURM_JOB_ID']}")
        finish_wandb()  # close the run: the resumed job continues it under the same id (Slurm allows KillWait seconds)
        return {"stopped_at": preemption.stopped_at, "output_dir": args.output_dir, "resumed_from": resume}

    # ---- save model, tokenizer, trainer state, the resolved recipe, and what each rank saw
    trainer.save_model(args.output_dir)  # cast to model.dtype
    write_rank_report(args.output_dir, dist, trainer.model, engine_name(trainer),
                      {**lora_extra(trainer.model, recipe), "built_partitioned": built_partitioned})
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_recipe(recipe, Path(args.output_dir) / "recipe.yaml")
        curve = plot_loss_curve(trainer.state.log_history, Path(args.output_dir) / "loss.png")
        log_image("train/loss_curve", curve)
        if recipe.tracking.eval is not None:  # score what was saved, as `smoldist eval` would
            from smoldist.evaluate import eval_at_end

            eval_at_end(recipe.tracking.eval, args.output_dir, stop)
    if args.push_to_hub:  # last, so the hub repo holds what the run dir holds: recipe, loss curve, state, evaluation
        trainer.push_to_hub(commit_message="End of training", revision=args.hub_revision)
    finish_wandb()
    print0(f"smoldist train: saved model to {args.output_dir} (train loss {result.training_loss:.4f})")
    return dict(result.metrics, output_dir=args.output_dir, resumed_from=resume)


def main(argv: list[str] | None = None) -> int:
    from smoldist.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
