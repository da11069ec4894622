"""Which checkpoint a run continues: only one of the same run, never another recipe's or other data's.

Each run directory records what the run is (`smoldist_run.json`): the resolved recipe minus the keys that may
change on resume, and the key of the store it trains on. `smoldist train` resumes the newest complete checkpoint
of `train.output_dir` (or exactly `train.resume_from_checkpoint`) only when both match; otherwise it stops
before any work with one line saying what differs and how to start fresh:

    smoldist train RECIPE --fresh              # moves OUTPUT_DIR to OUTPUT_DIR.old-<time> first (nothing deleted)
    smoldist train RECIPE train.output_dir=runs/new

Legitimate on resume (not part of the identity): how long (max_steps, num_train_epochs), how often to log, save
and evaluate, where to write, the dataloader and hub settings, `tracking`, the store's root, worker counts,
the attention kernel, and the number of processes (elastic resume, distributed/elastic.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from smoldist.config import Recipe, resolve_path
from smoldist.distributed.checkpoints import COMPLETE, last_complete_checkpoint
from smoldist.distributed.state import print0, under_launcher
from smoldist.errors import RecipeError
from smoldist.train.arguments import output_dir_of

IDENTITY_FILE = "smoldist_run.json"
# keys that change neither the weights a step produces nor the data: may differ between a run and its resume
RESUMABLE_KEYS = {
    "train.output_dir",
    "train.resume_from_checkpoint",
    "train.max_steps",
    "train.num_train_epochs",
    "train.logging_steps",
    "train.logging_strategy",
    "train.logging_first_step",
    "train.logging_dir",
    "train.save_steps",
    "train.save_strategy",
    "train.save_total_limit",
    "train.eval_steps",
    "train.eval_strategy",
    "train.eval_on_start",
    "train.per_device_eval_batch_size",
    "train.dataloader_num_workers",
    "train.dataloader_prefetch_factor",
    "train.ddp_timeout",
    "train.report_to",
    "train.run_name",
    "train.disable_tqdm",
    "train.push_to_hub",
    "train.hub_model_id",
    "train.hub_strategy",
    "train.hub_token",
    "train.hub_private_repo",
    "train.hub_revision",
    "data.store",
    "data.num_proc",
    "data.num_shards",
    "model.attn_implementation",
}
RESUMABLE_SECTIONS = ("tracking.",)
SHOW = 3  # differences named in the refusal


def flatten(tree, prefix: str = "") -> dict:
    """Nested recipe dict -> {"data.sources.0.path": value, ...} (the spelling of an override)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree and all(isinstance(x, dict) for x in tree):
        return {k: v for i, sub in enumerate(tree) for k, v in flatten(sub, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree}


def run_identity(recipe: Recipe) -> dict:
    """The recipe keys that make a run what it is, flattened; local source paths made absolute."""
    flat = flatten(recipe.to_dict())
    for key, value in flat.items():
        if key.startswith("data.sources.") and key.endswith(".path") and isinstance(value, str):
            local = resolve_path(value)
            flat[key] = os.path.abspath(local) if os.path.exists(local) else value
    kept = {
        k: v
        for k, v in sorted(flat.items())
        if k not in RESUMABLE_KEYS and not k.startswith(RESUMABLE_SECTIONS) and v is not None
    }
    return json.loads(json.dumps(kept, default=str))  # as it reads back from the run's file


def differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys if old.get(k) != new.get(k)]


def read_identity(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None


def refusal(where: str | Path, what: str, diffs: list[str], output_dir: str) -> RecipeError:
    shown = "; ".join(diffs[:SHOW]) + (f"; and {len(diffs) - SHOW} more" if len(diffs) > SHOW else "")
    return RecipeError(
        f"{where} holds a run of {what}: {shown}. Not resuming it. Start fresh with `smoldist train ... --fresh` "
        f"(moves {output_dir} to {output_dir}.old-<time>, nothing deleted) or a new train.output_dir=DIR; "
        f"what may change on resume: docs/launching.md (Resuming)"
    )


def check_same_run(where: str | Path, identity: dict, output_dir: str, store_key: str | None = None) -> None:
    """Refuse when the run recorded in `where` has another recipe (or, once known, another store key)."""
    old = read_identity(where)
    if old is None:
        return
    diffs = differences(old.get("recipe", {}), identity)
    if diffs:
        raise refusal(where, "another recipe", diffs, output_dir)
    if store_key is not None and old.get("store_key") not in (None, store_key):
        raise refusal(
            where,
            "other data",
            [
                f"store key {old['store_key']} -> {store_key} (the recipe is the same: "
                f"a source file's contents, the tokenizer or the template changed)"
            ],
            output_dir,
        )


def checkpoint_to_resume(resume_from, output_dir: str, identity: dict) -> str | None:
    """The checkpoint this run continues (None: from step 0), checked to be of the same run, before any work.

    `resume_from` is train.resume_from_checkpoint: unset/true = the newest complete one in output_dir, a path =
    exactly that one, false = none (and output_dir must not hold any)."""
    check_same_run(output_dir, identity, output_dir)
    text = str(resume_from).lower() if resume_from is not None else "true"
    if text == "false":
        found = last_complete_checkpoint(output_dir)
        if found:
            raise RecipeError(
                f"train.resume_from_checkpoint=false, but {output_dir} holds checkpoints "
                f"({Path(found).name}); start fresh with `smoldist train ... --fresh` (moves them "
                f"aside) or a new train.output_dir=DIR"
            )
        return None
    if text == "true":
        found = last_complete_checkpoint(output_dir)
        if found and read_identity(output_dir) is None:  # written before runs recorded what they are
            print0(f"smoldist train: {output_dir} records no recipe ({IDENTITY_FILE}): resuming {found} unchecked")
        return found
    path = Path(resume_from)
    if not (path / COMPLETE).is_file():
        raise RecipeError(
            f"train.resume_from_checkpoint: {path} is not a complete checkpoint (no {COMPLETE} marker "
            f"from a finished save); complete ones in {path.parent}: "
            f"{last_complete_checkpoint(str(path.parent)) or 'none'}"
        )
    check_same_run(path.parent, identity, output_dir)
    return str(path)


def finished_line(output_dir: str, train: dict) -> str | None:
    """One line when output_dir already holds this run's final model at (or past) the steps or epochs asked for;
    None when there is training left. The final `trainer_state.json` is written only after the model is saved."""
    try:
        state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    step, epoch = state.get("global_step", 0), state.get("epoch") or 0.0
    max_steps, epochs = train.get("max_steps", -1), train.get("num_train_epochs", 3.0)
    if max_steps > 0:  # SFTConfig: max_steps > 0 wins over epochs
        if step < max_steps:
            return None
        done, more = f"step {step} of train.max_steps {max_steps}", "raise train.max_steps"
    else:
        if epoch < epochs - 1e-6:
            return None
        done, more = f"epoch {epoch:g} of train.num_train_epochs {epochs:g}", "raise train.num_train_epochs"
    return (
        f"smoldist train: {output_dir} is finished ({done}); saved model in {Path(output_dir).resolve()}; "
        f"nothing to do ({more} to continue it, or --fresh to start over)"
    )


def record_identity(output_dir: str, identity: dict, store_key: str) -> None:
    """Written by the main process once the checks passed: atomically, other ranks may be reading it."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{IDENTITY_FILE}.tmp"
    tmp.write_text(json.dumps({"recipe": identity, "store_key": store_key}, indent=1, default=str))
    os.replace(tmp, out / IDENTITY_FILE)


def move_aside(output_dir: str) -> Path | None:
    """`--fresh`: the old run (checkpoints, model, W&B id) moves to OUTPUT_DIR.old-<time>; None if there is none."""
    out = Path(output_dir)
    if not out.exists() or not any(out.iterdir()):
        return None
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while (target := out.with_name(f"{out.name}.old-{stamp}{f'-{n}' if n else ''}")).exists():
        n += 1
    out.rename(target)
    return target


def start_fresh(recipe: Recipe, dry_run: bool) -> str:
    """`smoldist train --fresh`, once, before any process starts: what was done (or, dry run, would be)."""
    out = output_dir_of(recipe)
    if under_launcher():  # a requeued Slurm job or a relaunched rank would move its own new checkpoints aside
        raise RecipeError(
            f"--fresh: give it where `smoldist train` starts the processes, not inside a launcher or a "
            f"Slurm job; there, move {out} away yourself or set a new train.output_dir=DIR"
        )
    if dry_run:
        return f"# --fresh: first moves {out} to {out}.old-<time> (if it holds anything)"
    moved = move_aside(out)
    return (
        f"smoldist train: --fresh: moved {out} to {moved} (nothing deleted)"
        if moved
        else f"smoldist train: --fresh: {out} holds no run; starting one"
    )
