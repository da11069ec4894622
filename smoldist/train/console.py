"""The training console: one `smoldist | ...` line per logging step and per evaluation, one progress bar.

transformers adds ProgressCallback (a tqdm bar that also writes every log dict under it) or, with
`disable_tqdm`, PrinterCallback (prints every log dict). The dicts already go to trainer_state.json and
W&B; on screen they repeat our compact line. `quiet_console` keeps the bar and drops the dicts.
"""

from __future__ import annotations

import sys

from transformers import PrinterCallback, ProgressCallback


class BarOnlyProgress(ProgressCallback):
    """transformers' progress bar without its per-log dict lines; evaluation inside training shows only its line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.training_bar is None:  # a standalone trainer.evaluate() keeps its bar
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)


def quiet_console(trainer) -> None:
    """Swap the trainer's log-printing callbacks for the bar alone (none when tqdm is disabled), and silence
    transformers' own bars ("Writing model shards" at every checkpoint, "Loading weights") in this process."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnlyProgress())


def close_bars(trainer) -> None:
    """End a live progress bar's line, so that an error printed next starts a line of its own."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
            callback.training_bar.close()
            callback.training_bar = None


def write_line(line: str) -> None:
    """Print above any live tqdm bar, so the bar stays on one line."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def eval_line(step: int, logs: dict) -> str:
    parts = [f"eval step {step}", f"loss {logs['eval_loss']:.4f}"]
    if "eval_runtime" in logs:
        parts.append(f"{logs['eval_runtime']:.2f}s")
    if "eval_samples_per_second" in logs:
        parts.append(f"{logs['eval_samples_per_second']:,.1f} rows/s")
    return "smoldist | " + " | ".join(parts)
