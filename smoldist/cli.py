"""The `smoldist` command: one subcommand per thing a user does; each parses, then calls its stage.

    smoldist prepare [RECIPE] [section.key=value ...] [--force]
    smoldist preview [RECIPE] [section.key=value ...] [-n N]
    smoldist train   [RECIPE] [section.key=value ...] [--accelerate-config NAME --num-processes N ...] [--dry-run]
                     [--fresh]
    smoldist submit  RECIPE --nodes N [--gpus-per-node G] [--cpus-per-task C] [--mem M] [--partition P] [--time T]
                     [--dry-run] [--wait]
    smoldist chat    MODEL_OR_RUN "What is 2 plus 3?"
    smoldist eval    MODEL_OR_RUN --data FILE --format gsm8k [-n N] [--batch-size B] [--max-new-tokens M] [--out FILE]
    smoldist eval    RUN --loss
    smoldist eval    RUN --compare [BASE] (--data FILE | --loss)   # better than the model it started from?
    smoldist merge   RUN [OUT]
    smoldist configs                      # the accelerate configs shipped with smoldist

With no RECIPE, prepare, preview and train use the demo recipe shipped in the package (offline, CPU).
Errors in the recipe or the data print one line naming the problem and exit with status 2 (a non-finite step 4,
a full disk 5: smoldist/errors.py). Nothing
imports this module but the entry points (`smoldist`, `python -m smoldist`, `python -m smoldist.train`).
"""

from __future__ import annotations

import argparse
import sys

from smoldist.cluster.launcher import add_launch_arguments
from smoldist.cluster.submit import node_count
from smoldist.errors import SmoldistError

GSM8K_BATCH = 8  # questions generated at once unless --batch-size says otherwise


def split_recipe_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the recipe file; the rest are overrides."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoldist", description="Distributed SFT of chat models with TRL.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="template, tokenize, pack and store a recipe's data")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]")
    p.add_argument("--force", action="store_true", help="rebuild the store even if it exists")
    t = sub.add_parser("train", help="train a recipe with SFTTrainer (prepares the store if missing)")
    t.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]")
    add_launch_arguments(t)
    t.add_argument("--fresh", action="store_true",
                   help="start over: move train.output_dir (checkpoints, model, W&B id) to OUTPUT_DIR.old-<time> first")
    v = sub.add_parser("preview", help="show the first records as the model sees them, trained tokens highlighted")
    v.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]")
    v.add_argument("-n", type=int, default=3, help="how many records")
    m = sub.add_parser("submit", help="submit Slurm jobs: prepare (if needed), then train after it")
    m.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]")
    m.add_argument("--nodes", type=node_count, default="1",
                   help="N, or MIN-MAX: take what the scheduler gives on each start (elastic resume)")
    m.add_argument("--gpus-per-node", type=int, help="GPUs per node to ask for (default: what the partition gives)")
    m.add_argument("--partition")
    m.add_argument("--time", help="time limit, e.g. 24:00:00")
    m.add_argument(
        "--cpus-per-task", type=int, help="CPUs per task (one task per node); default: whole nodes (--exclusive)"
    )
    m.add_argument("--mem", help="memory per node, e.g. 200G; default: all of it (--mem=0)")
    m.add_argument("--logs", default="logs", help="directory for the jobs' logs")
    m.add_argument("--dry-run", action="store_true", help="print the sbatch commands only")
    m.add_argument("--wait", action="store_true", help="wait until the train job ends; exit with its status")
    c = sub.add_parser("chat", help="generate one reply with a trained model through its chat template")
    c.add_argument(
        "model_dir", metavar="MODEL_OR_RUN", help="a model directory, or a run directory of `smoldist train`"
    )
    c.add_argument("prompt", help="the user turn to answer")
    c.add_argument("--max-new-tokens", type=int, default=48, help="longest reply")
    e = sub.add_parser("eval", help="score a model or run: gsm8k exact match (--data), or held-out loss (--loss)")
    e.add_argument(
        "model", metavar="MODEL_OR_RUN", help="a model directory, or a run directory of `smoldist train` (full or LoRA)"
    )
    e.add_argument("--data", help="questions with gold answers (jsonl/json/parquet)")
    e.add_argument("--format", default="gsm8k", choices=["gsm8k"], help="how to read questions and gold answers")
    e.add_argument("-n", type=int, help="score only the first N questions")
    e.add_argument("--batch-size", type=int, help="questions generated at once (default 8), or rows per loss batch "
                   "(default: the run's own eval batch)")
    e.add_argument("--max-new-tokens", type=int, default=256, help="longest answer generated per question")
    e.add_argument("--out", help="write the result and every record as JSON here")
    e.add_argument("--loss", action="store_true", help="loss on the eval split of the store the run trained on")
    e.add_argument("--compare", nargs="?", const="", metavar="BASE",
                   help="score the model the run started from too (or BASE), on the same data, and say which is better")
    g = sub.add_parser("merge", help="fold a LoRA run's adapter into its base model and save the full model")
    g.add_argument("run")
    g.add_argument("out", nargs="?", help="where to write it (default: RUN-merged)")
    sub.add_parser("configs", help="list the accelerate configs (names for --accelerate-config) and what each is for")
    return parser


def run_command(ns: argparse.Namespace) -> int:
    from smoldist.config import load_recipe

    if ns.command == "chat":
        from smoldist.eval.generate import chat

        print(chat(ns.model_dir, ns.prompt, max_new_tokens=ns.max_new_tokens))
        return 0
    if ns.command in ("eval", "merge"):
        return run_model_command(ns)
    if ns.command == "configs":
        from smoldist.cluster.shipped import list_configs

        print(list_configs())
        return 0
    path, overrides = split_recipe_args(ns.args)
    recipe = load_recipe(path, overrides)
    if ns.command == "prepare":
        from smoldist.store.build import prepare

        prepare(recipe.model, recipe.data, force=ns.force)
        return 0
    if ns.command == "submit":
        from smoldist.cluster.submit import submit

        res = submit(path, overrides, ns.nodes, ns.gpus_per_node, ns.partition, ns.time, ns.logs, ns.dry_run, ns.wait,
                     cpus_per_task=ns.cpus_per_task, mem=ns.mem)
        return res.get("returncode", 0)
    if ns.command == "preview":
        from smoldist.store.preview import preview

        preview(recipe.model, recipe.data, n=ns.n)
        return 0
    from smoldist.cluster.launcher import plan_from_args, spawn

    plan = plan_from_args(ns, path, overrides)  # one plan: --dry-run prints it, the run below runs it
    if ns.fresh:
        from smoldist.train.resume import start_fresh

        print(start_fresh(recipe, ns.dry_run), flush=True)
    if ns.dry_run:
        print(plan.describe(only_rank=ns.machine_rank))
        return 0
    if plan.config is not None:
        return spawn(plan, ns.machine_rank or 0)
    from smoldist.distributed.preemption import stopped_exit_code
    from smoldist.train.run import run

    return stopped_exit_code() if "stopped_at" in run(recipe) else 0


def run_model_command(ns: argparse.Namespace) -> int:
    """Commands that take a trained model or run rather than a recipe."""
    if ns.command == "merge":
        from smoldist.model.merge import merge

        print(f"smoldist merge: wrote {merge(ns.run, ns.out)}")
        return 0
    if ns.compare is not None:
        return compare_command(ns)
    if ns.loss:
        from smoldist.eval.loss import eval_loss

        res = eval_loss(ns.model, ns.batch_size, ns.out)
        print(f"smoldist eval: {ns.model}: eval loss {res['eval_loss']:.4f} over {res['rows']} rows of {res['store']}")
        return 0
    if not ns.data:
        raise SmoldistError("eval: give --data FILE (questions with gold answers) or --loss")
    from smoldist.eval.gsm8k import eval_gsm8k
    from smoldist.eval.results import print_gsm8k

    res = eval_gsm8k(ns.model, ns.data, ns.n, ns.batch_size or GSM8K_BATCH, ns.max_new_tokens, ns.out)
    print_gsm8k(res)
    if ns.out:
        print(f"smoldist eval: wrote {ns.out}")
    return 0


def compare_command(ns: argparse.Namespace) -> int:
    """`smoldist eval RUN --compare [BASE] (--data FILE | --loss)`: the run against the model it started from."""
    from smoldist.eval import compare
    from smoldist.eval.results import write_json

    base = ns.compare or None
    if ns.loss:
        res = compare.compare_loss(ns.model, base, ns.batch_size)
    elif ns.data:
        res = compare.compare_gsm8k(ns.model, base, ns.data, ns.n, ns.batch_size or GSM8K_BATCH, ns.max_new_tokens)
    else:
        raise SmoldistError("eval --compare: give --data FILE (questions with gold answers) or --loss")
    print(f"smoldist eval: {ns.model}: {compare.summary(res)}")
    write_json(ns.out, res)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    flags = [a for a in extra if a.startswith("-")]
    if flags or (extra and not hasattr(ns, "args")):
        parser.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if extra:  # overrides written after options: `train RECIPE --dry-run train.lr=1`
        ns.args += extra
    try:
        return run_command(ns)
    except SmoldistError as e:
        print(f"smoldist: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
