"""`tracking.eval`: the saved model scored at the end of training, on the main process, and logged to W&B.

    tracking:
      eval: {data: gsm8k_test.jsonl, n: 200, compare: true}

Writes eval_gsm8k.json (and with `compare`, eval_compare.json: the run against the model it started from, with
the verdict) beside the model, prints one line each, and logs accuracy, samples and the verdict to W&B. A stop
signal ends it at the next batch: the model is already saved, and a partial accuracy is not logged as the run's.
"""

from __future__ import annotations

from pathlib import Path

from smoldist import faults
from smoldist.config import EndEvalConfig
from smoldist.eval.compare import paired, score_gsm8k, summary
from smoldist.eval.results import write_json


def eval_at_end(cfg: EndEvalConfig, output_dir: str, stop=None) -> dict:
    """`tracking.eval`: score the saved model (main process), write eval_gsm8k.json, log accuracy + samples to W&B;
    with `compare`, the model the run started from too (eval_compare.json), and the verdict.
    A stop signal (`stop`, a distributed.preemption.StopFlag) ends it at the next batch: the model is already saved."""
    scored = score_gsm8k(
        output_dir,
        None,
        cfg.data,
        cfg.n,
        cfg.batch_size,
        cfg.max_new_tokens,
        compare=cfg.compare,
        should_stop=_stop_check(stop),
        out=str(Path(output_dir) / "eval_gsm8k.json"),
    )
    result = scored[0]
    stopped = next((r for r in scored if r["stopped"]), None)
    if stopped is not None:
        so_far = f" (accuracy so far {stopped['accuracy']:.1%})" if stopped["n"] else ""
        print(
            f"smoldist | eval gsm8k stopped by signal {stop.signum} after {stopped['n']} "
            f"of {stopped['asked']} questions"
            f"{'' if stopped is result else ' of the base'}{so_far}; the model is saved: score it with "
            f"`smoldist eval {output_dir} --data {cfg.data}{' --compare' if cfg.compare else ''}`",
            flush=True,
        )
        return result  # a partial accuracy is not logged as the run's
    compared = paired(*scored) if len(scored) == 2 else None
    if compared is not None:
        write_json(str(Path(output_dir) / "eval_compare.json"), compared)
    by = result["extracted_by"]
    print(
        f"smoldist | eval gsm8k | accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}) | "
        f"'####' {by.get('####', 0)}, last number {by.get('last number', 0)}, none {by.get('none', 0)}",
        flush=True,
    )
    if compared is not None:
        print(f"smoldist | eval gsm8k | {summary(compared)}", flush=True)
    import wandb  # here, not at import: a run without tracking.eval does not pay for it

    if wandb.run is not None:
        cols = ["question", "completion", "extracted", "gold", "correct"]
        table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in result["records"][: cfg.samples]])
        logged = {
            "eval/gsm8k_accuracy": result["accuracy"],
            "eval/gsm8k_n": result["n"],
            "eval/gsm8k_fallback": by.get("last number", 0),
            "eval/gsm8k_samples": table,
        }
        if compared is not None:
            logged.update(
                {
                    "eval/gsm8k_accuracy_base": compared["base"]["accuracy"],
                    "eval/gsm8k_delta": compared["delta"],
                    "eval/gsm8k_p_value": compared["p_value"],
                }
            )
            wandb.run.summary["eval/verdict"] = compared["verdict"]
        wandb.run.log(logged)
    return result


def _stop_check(stop):
    """Asked before each generation batch: has a stop signal come (faults.SIGNAL_AT_END_EVAL_BATCH sends one)?"""
    fault, batches = faults.count(faults.SIGNAL_AT_END_EVAL_BATCH) or 0, 0

    def should_stop() -> bool:
        nonlocal batches
        if fault and batches == fault:
            faults.send_stop_signal()
        batches += 1
        return stop is not None and stop.signum is not None

    return should_stop
