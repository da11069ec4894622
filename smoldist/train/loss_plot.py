"""loss.png in the run directory: the loss curve for people not using W&B (also logged to W&B)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(log_history: list[dict], path: Path) -> Path | None:
    """A small loss-curve PNG for people not using W&B."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*train), label="train loss", color="#4c72b0")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="#c44e52")
    ax.set(xlabel="optimiser step", ylabel="loss", title=path.parent.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
