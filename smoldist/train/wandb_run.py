"""The W&B run of a job: one run across ranks, resumes and requeues; what it is told once; how it ends.

`mode: auto` is online when credentials exist (`wandb login`, or WANDB_API_KEY), else offline with a notice. The
main process prints the run's URL, or offline its folder and the `wandb sync` command that uploads it.
Only the main process logs (transformers' WandbCallback); the run id lives in
`<output_dir>/wandb_run_id`, so a resumed or requeued job continues the same run. The run's config
gets the recipe, the store's counts, library versions, the git commit, the engine and the Slurm job.
"""

from __future__ import annotations

import netrc
import os
import subprocess
import uuid
from pathlib import Path

from transformers import TrainerCallback

from smoldist import faults
from smoldist.config import WandbConfig
from smoldist.store.manifest import library_versions

RUN_ID_FILE = "wandb_run_id"


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def run_id(output_dir: str, new_run: bool = False) -> str:
    """The W&B run id of this output dir: made when a run starts from step 0, then reused by every resume."""
    path = Path(output_dir) / RUN_ID_FILE
    if path.is_file() and not new_run:
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    new = uuid.uuid4().hex[:12]
    path.write_text(new + "\n")
    return new


def configure_wandb(
    cfg: WandbConfig, run_group: str, output_dir: str, is_main: bool, new_run: bool = False
) -> list[str]:
    """Sets W&B's environment for this process and returns the trainer's `report_to`; `new_run`: not a resume."""
    mode = cfg.mode
    if mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
        return ["none"]
    if mode == "auto":
        mode = "online" if has_wandb_credentials() else "offline"
        if mode == "offline" and is_main:
            print(
                "smoldist: no W&B credentials found; logging offline (to log online: `wandb login`, or set "
                "WANDB_API_KEY)",
                flush=True,
            )
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = output_dir
    os.environ["WANDB_PROJECT"] = cfg.project
    os.environ["WANDB_RUN_GROUP"] = cfg.group or run_group
    os.environ["WANDB_RESUME"] = "allow"
    if is_main:
        os.environ["WANDB_RUN_ID"] = run_id(output_dir, new_run)
    for key, value in (("WANDB_ENTITY", cfg.entity), ("WANDB_NAME", cfg.name), ("WANDB_TAGS", ",".join(cfg.tags))):
        if value:
            os.environ[key] = value
    os.environ.setdefault("WANDB_SILENT", "true")  # hides the banner and the run URL: announce_run prints it
    return ["wandb"]


def announce_run(run) -> str:
    """The line that says where the run is: its URL online; offline its folder and the command that uploads it."""
    if run.offline:
        folder = Path(run.dir).parent  # <output_dir>/wandb/offline-run-<time>-<id>/files -> the run's folder
        return f"smoldist: W&B offline run: {folder}; upload it with: wandb sync {folder}"
    return f"smoldist: W&B run: {run.url}"


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(recipe_dict: dict, manifest: dict, world_size: int, engine: str, accelerate_state) -> dict:
    """What the run config gets once: enough to reproduce the run and judge its data."""
    train = manifest["splits"]["train"]
    ds_config = getattr(getattr(accelerate_state, "deepspeed_plugin", None), "deepspeed_config", None)
    return {
        "smoldist/recipe": recipe_dict,
        "smoldist/store": {
            "key": manifest["key"],
            "counts": {k: v for k, v in manifest["counts"].items() if k != "per_source"},
            "train": train,
            "eval": manifest["splits"].get("eval"),
        },
        "smoldist/versions": library_versions(),
        "smoldist/git_commit": git_commit(),
        "smoldist/world_size": world_size,
        "smoldist/engine": engine,
        "smoldist/deepspeed_config": ds_config,
        "smoldist/slurm": {
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "nodes": os.environ.get("SLURM_JOB_NUM_NODES"),
            "restart": os.environ.get("SLURM_RESTART_COUNT"),
        },
    }


class RunInfoCallback(TrainerCallback):
    """After the W&B run exists (WandbCallback runs first), add smoldist's info and the store's report."""

    def __init__(self, info: dict, report_png: Path | None):
        self.info, self.report_png = info, report_png

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import wandb

        if wandb.run is None:
            return
        print(announce_run(wandb.run), flush=True)
        wandb.run.config.update(self.info, allow_val_change=True)
        if self.report_png and self.report_png.is_file():
            wandb.run.log({"data/store_report": wandb.Image(str(self.report_png))}, commit=False)


def log_image(key: str, path) -> None:
    import wandb

    if path is not None and wandb.run is not None:
        wandb.run.log({key: wandb.Image(str(path))}, commit=False)


def finish_wandb() -> None:
    import wandb

    if wandb.run is not None:
        faults.pause(faults.WANDB_FINISH_DELAY_S)
        wandb.finish()


def record_failure(message: str, exit_code: int) -> None:
    """The run's W&B record says why it stopped (summary `smoldist/failure`), and the run is closed as failed."""
    import wandb

    if wandb.run is not None:
        wandb.run.summary["smoldist/failure"] = message
        wandb.run.summary["smoldist/exit_code"] = exit_code
        wandb.finish(exit_code=exit_code)
