"""Weights & Biases mode: `auto` is online when credentials exist, else offline with a notice."""

from __future__ import annotations

import netrc
import os

from smoldist.config import WandbConfig


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def configure_wandb(cfg: WandbConfig, run_group: str, output_dir: str, is_main: bool) -> list[str]:
    """Sets W&B's environment for this process and returns the trainer's `report_to`."""
    mode = cfg.mode
    if mode == "disabled":
        return ["none"]
    if mode == "auto":
        mode = "online" if has_wandb_credentials() else "offline"
        if mode == "offline" and is_main:
            print(f"smoldist: no W&B credentials found; logging offline under {output_dir}/wandb "
                  f"(upload later with: wandb sync {output_dir}/wandb/offline-run-*)", flush=True)
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_DIR", output_dir)
    os.environ["WANDB_PROJECT"] = cfg.project
    if cfg.entity:
        os.environ["WANDB_ENTITY"] = cfg.entity
    os.environ["WANDB_RUN_GROUP"] = cfg.group or run_group
    if cfg.name:
        os.environ["WANDB_NAME"] = cfg.name
    if cfg.tags:
        os.environ["WANDB_TAGS"] = ",".join(cfg.tags)
    os.environ.setdefault("WANDB_SILENT", "true")
    return ["wandb"]
