"""One training run of a recipe, on this rank: what `smoldist train` does in every process, at any scale.

    smoldist train                                               # the bundled demo, one process
    smoldist train launch/smollm2-135m/smoltalk.yaml train.learning_rate=1e-4
    python -m smoldist.train RECIPE [overrides]                  # the same code
    accelerate launch -m smoldist.train RECIPE [overrides]       # many processes

Stages: recipe -> store (prepared once, by one process under a file lock, if missing) -> tokenizer -> model
-> SFTConfig -> SFTTrainer -> train (auto-resume from the last checkpoint) -> save -> evaluate (tracking.eval).
"""

from __future__ import annotations

import os
from pathlib import Path

from smoldist.config import Recipe, save_recipe
from smoldist.config.batch import device_rows, gradient_accumulation
from smoldist.distributed.elastic import ElasticResume, check_resume_world, prepare_resume
from smoldist.distributed.fingerprint import write_rank_report
from smoldist.distributed.preemption import PreemptionCallback, StopFlag, requeue_slurm_job
from smoldist.distributed.state import EXPECTED_WORLD_ENV, check_world, dist_info, engine_name, print0
from smoldist.errors import RecipeError, SmoldistError
from smoldist.eval.end_of_run import eval_at_end
from smoldist.model.build import build_model, check_seq_len, load_tokenizer
from smoldist.model.lora import (
    count_parameters,
    fit_trainable_tokens,
    frozen_checksum,
    peft_config,
    pin_base_path,
    trainable_token_rows,
)
from smoldist.model.precision import precision_report
from smoldist.model.stop_tokens import set_stop_tokens
from smoldist.store.build import prepare
from smoldist.store.manifest import load_split
from smoldist.store.plan import plan_store
from smoldist.store.system_prompt import mixed_prompts_line, started_prompt_line
from smoldist.train.arguments import activation_checkpointing, device_type_of, sft_config, train_defaults
from smoldist.train.console import close_bars, quiet_console
from smoldist.train.dpo_run import check_engine, dpo_trainer_kwargs, refuse_launch
from smoldist.train.dpo_trainer import DpoTrainer
from smoldist.train.launched import check_launched_world
from smoldist.train.loss_plot import plot_loss_curve
from smoldist.train.nonfinite import NonFiniteGuard
from smoldist.train.resume import (
    check_same_run,
    checkpoint_to_resume,
    finished_line,
    record_identity,
    run_identity,
)
from smoldist.train.throughput import (
    ATTENTION_CONVENTION,
    FlopModel,
    ThroughputMeter,
    device_peak_tflops,
    head_on_trained_tokens,
)
from smoldist.train.trainer import SmoldistTrainer, StepCounter
from smoldist.train.wandb_run import (
    RunInfoCallback,
    configure_wandb,
    finish_wandb,
    log_image,
    record_failure,
    run_info,
)


def run(recipe: Recipe) -> dict:
    """Train `recipe` in this process (one rank of a launch, or alone). Returns the final metrics."""
    stop = StopFlag()
    try:
        return _run(recipe, stop)
    finally:
        stop.restore()  # the process's previous signal handlers come back, however training ended


def lora_extra(model, recipe: Recipe) -> dict:
    """For LoRA runs, each rank also records a checksum of the frozen base weights (they must not move)."""
    return {} if recipe.model.lora is None else {"frozen_sha256": frozen_checksum(model)}


def check_eos_token(eos_token: str | None, plan) -> None:
    """train.eos_token may name the template's end of turn (what the saved model stops on), nothing else."""
    if eos_token is None:
        return
    from smoldist.data.templates.derive import check_end_of_turn

    end = check_end_of_turn(plan.template, plan.tok.backend, plan.tok.special_tokens)
    if eos_token != end:
        raise RecipeError(
            f"train.eos_token: '{eos_token}' contradicts the chat template, whose assistant turns end with '{end}' "
            f"(the saved model stops there); leave train.eos_token out, or set model.chat_template to a template "
            f"that ends turns with '{eos_token}'"
        )


def _run(recipe: Recipe, stop: StopFlag) -> dict:
    # ---- distributed state and the prepared store (built once, by the main process)
    check_seq_len(recipe.model, recipe.data.seq_len)  # from the model's config alone: before any work
    if recipe.method == "dpo":
        refuse_launch()  # an engine DPO does not support yet: refused before the store or the model
    defaults = {**train_defaults(recipe), **recipe.train}
    # the process group is created here, with the recipe's timeout
    dist = dist_info(cpu=defaults["use_cpu"], timeout_s=recipe.train.get("ddp_timeout", 1800))
    expected = os.environ.get(EXPECTED_WORLD_ENV)
    check_world(dist, int(expected) if expected else None)
    check_launched_world(dist.world_size, has_gpus=not defaults["use_cpu"])
    output_dir = defaults["output_dir"]
    # only a checkpoint of this run (same recipe, same data) is resumed: refuse another run's before any work
    identity = run_identity(recipe)
    resume = checkpoint_to_resume(recipe.train.get("resume_from_checkpoint"), output_dir, identity)
    # a checkpoint from another world size: refuse now, before anything loads, if this world cannot take the batch
    resumed_world = resume and check_resume_world(
        resume, recipe.train.get("global_batch_tokens"), device_rows(recipe.train), recipe.data.seq_len, dist.world_size
    )
    # the batch split, before any work (a plain `accelerate launch` has no plan that checked it)
    gradient_accumulation(
        recipe.train.get("global_batch_tokens"), device_rows(recipe.train), recipe.data.seq_len, dist.world_size
    )
    plan = plan_store(recipe.model, recipe.data)  # the store's key, before anything is built
    if started := started_prompt_line(recipe.model.chat_template, plan.template):
        print0(f"smoldist train: {started}")
    for run_dir in {output_dir, *([str(Path(resume).parent)] if resume else [])}:  # same recipe, other file contents?
        check_same_run(run_dir, identity, output_dir, plan.key)
    check_eos_token(recipe.train.get("eos_token"), plan)
    finished = finished_line(output_dir, recipe.train)  # a re-run of a finished run trains and writes nothing
    if finished:
        print0(finished)
        return {"finished": True, "output_dir": output_dir, "resumed_from": None}
    # one process builds a missing store under a file lock; the others poll for it outside any collective,
    # so a build longer than ddp_timeout cannot time the job out (store/lock.py)
    store = prepare(recipe.model, recipe.data, verbose=dist.is_main, verify_shards=dist.is_main, plan=plan)
    train_ds, eval_ds = load_split(store.path, "train"), load_split(store.path, "eval")
    if dist.is_main:
        record_identity(output_dir, identity, store.manifest["key"])

    # ---- tokenizer (with the template the store was built with) and model
    tokenizer = load_tokenizer(recipe.model)
    tokenizer.chat_template = store.template
    # a run that starts from step 0 is a new W&B run, even in an output_dir that logged one before
    report_to = configure_wandb(recipe.tracking.wandb, recipe.name, output_dir, dist.is_main, new_run=resume is None)
    if recipe.model.init:  # a random init is built whole: under zero.Init its values would depend on the world size
        model = build_model(recipe.model, tokenizer, device_type=device_type_of(recipe))
        args = sft_config(recipe, dist.world_size, report_to)
    else:  # arguments first: under ZeRO-3 they register its config, so pretrained weights load partitioned
        args = sft_config(recipe, dist.world_size, report_to)
        model = build_model(recipe.model, tokenizer, device_type=device_type_of(recipe))
    checkpointing = activation_checkpointing(recipe.train)
    ac = (
        "on (the recipe asks: less memory, more step time)" if checkpointing else "off (train.activation_checkpointing)"
    )
    print0(f"smoldist train: {model.smoldist_attention.line()}; activation checkpointing {ac}")
    built_partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    if any(src.format != "text" for src in recipe.data.sources):  # chat turns are trained: stop where they end
        stops = set_stop_tokens(tokenizer, model, store.template)
        if stops and stops.changed:
            print0(
                f"smoldist train: the saved model stops at {stops.end_of_turn} (end of an assistant turn; the "
                f"tokenizer's eos was {stops.previous_eos}); pad is {stops.pad}"
            )

    # ---- trainer
    if eval_ds is None and args.eval_strategy != "no":
        raise RecipeError("train.eval_strategy: set, but the store has no eval split; set data.eval_fraction > 0")
    stop.install()  # SIGUSR1 / SIGTERM: finish the step, checkpoint, stop (and requeue under Slurm)
    preemption = PreemptionCallback(stop)
    lora = None
    if recipe.model.lora is not None:  # TRL wraps the model in a peft.PeftModel (frozen base + adapter)
        pin_base_path(model)
        lora = peft_config(recipe.model.lora, trainable_token_rows(model, tokenizer.smoldist_added))
    trainer_class, method_kwargs = SmoldistTrainer, {}
    if recipe.method == "dpo":  # reference log-probs computed (or reused) now, before the first step
        trainer_class = DpoTrainer
        method_kwargs = dpo_trainer_kwargs(recipe, model, tokenizer, store.path, train_ds, eval_ds, dist, args)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[preemption, ElasticResume(resumed_world, dist.world_size)],
        **method_kwargs,
    )
    if lora is not None and lora.trainable_token_indices:
        fit_trainable_tokens(trainer.model)
    quiet_console(trainer)  # one line per log on screen; the dicts stay in trainer_state.json and W&B
    peak = device_peak_tflops(recipe.tracking.peak_tflops)
    # counted after peft wrapped the model: which weights train decides the FLOPs
    # TRL's fused head skips untrained tokens (CUDA + Triton); the DPO loss runs the head on scored tokens only
    compact_head = recipe.method == "dpo" or head_on_trained_tokens(args.device)
    trainer.meter = meter = ThroughputMeter(FlopModel.of(trainer.model, compact_head), peak, dist.world_size)
    trainer.add_callback(StepCounter(meter))
    trainer.ship_dtype = recipe.model.dtype  # fp32 masters trained; the final model ships in model.dtype
    engine = engine_name(trainer.accelerator.state)
    if recipe.method == "dpo":
        check_engine(engine)
    trainer.guard = NonFiniteGuard(
        dist.rank, dist.world_size, args.output_dir, resume, steps_in_backward=engine.startswith("deepspeed")
    )
    info = run_info(recipe.to_dict(), store.manifest, dist.world_size, engine, trainer.accelerator.state)
    trainer.add_callback(RunInfoCallback(info, store.path / "report.png"))
    n_params, n_trainable = count_parameters(trainer.model)
    trained = "" if n_trainable == n_params else f" ({n_trainable / 1e6:.3f} M trainable: LoRA)"
    print0(
        f"smoldist train: {recipe.name}: {n_params / 1e6:.2f} M parameters{trained}"
        f"{' (built partitioned, ZeRO-3 zero.Init)' if built_partitioned else ''}, world size {dist.world_size}, "
        f"{len(train_ds):,} rows x {recipe.data.seq_len} tokens, grad accumulation {args.gradient_accumulation_steps}, "
        f"store {store.path.resolve()}, output {Path(output_dir).resolve()}"
    )
    print0(
        f"smoldist train: MFU counts the LM head on {'trained' if compact_head else 'all'} tokens; "
        f"{ATTENTION_CONVENTION}"
    )

    # ---- train, resuming from the last complete checkpoint in output_dir
    if resume:
        print0(f"smoldist train: resuming from {resume}")
        for line in prepare_resume(trainer, resume, resumed_world, dist.world_size, dist.is_main):
            print0(f"smoldist train: {line}")
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except SmoldistError as e:  # a non-finite step or a full disk: every rank stops here, nothing more is saved
        close_bars(trainer)
        record_failure(str(e), e.exit_code)
        raise
    if preemption.stopped_at is not None:
        print0(
            f"smoldist train: stopped by signal {stop.signum} after step {preemption.stopped_at}; "
            f"checkpoint saved in {args.output_dir}; run again to resume"
        )
        # requeue FIRST: nothing slow (W&B's finish can take seconds online) may stand between the checkpoint and it
        if dist.is_main and requeue_slurm_job():
            print0(f"smoldist train: requeued Slurm job {os.environ['SLURM_JOB_ID']}")
        finish_wandb()  # close the run: the resumed job continues it under the same id (Slurm allows KillWait seconds)
        return {"stopped_at": preemption.stopped_at, "output_dir": args.output_dir, "resumed_from": resume}

    # ---- save model, tokenizer, trainer state, the resolved recipe, and what each rank saw
    trainer.save_model(args.output_dir)  # cast to model.dtype
    write_rank_report(
        args.output_dir,
        dist,
        trainer.model,
        engine,
        {
            **lora_extra(trainer.model, recipe),
            "built_partitioned": built_partitioned,
            "attention": model.smoldist_attention.report(),
            "activation_checkpointing": checkpointing,
            "precision": precision_report(trainer.accelerator, trainer.model_wrapped),
        },
    )
    if trainer.is_world_process_zero():
        trainer.save_state()
        save_recipe(recipe, Path(args.output_dir) / "recipe.yaml")
        curve = plot_loss_curve(trainer.state.log_history, Path(args.output_dir) / "loss.png")
        log_image("train/loss_curve", curve)
        if recipe.tracking.eval is not None:  # score what was saved, as `smoldist eval` would
            eval_at_end(recipe.tracking.eval, args.output_dir, stop)
    if args.push_to_hub:  # last, so the hub repo holds what the run dir holds: recipe, loss curve, state, evaluation
        trainer.push_to_hub(commit_message="End of training", revision=args.hub_revision)
    finish_wandb()
    print0(f"smoldist train: saved model to {args.output_dir} (train loss {result.training_loss:.4f})")
    if mixed := mixed_prompts_line(store.manifest["counts"].get("system_prompt") or {}):
        print0(f"smoldist train: note: {mixed}")
    return dict(result.metrics, output_dir=args.output_dir, resumed_from=resume)
