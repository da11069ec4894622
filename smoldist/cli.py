"""The `smoldist` command: one subcommand per thing a user does; each parses, then calls its stage.

    smoldist prepare [RECIPE] [section.key=value ...] [--force]
    smoldist preview [RECIPE] [section.key=value ...] [-n N]
    smoldist train   [RECIPE] [section.key=value ...] [--accelerate-config NAME --num-processes N ...] [--dry-run]
                     [--fresh]
    smoldist submit  RECIPE --nodes N [--gpus-per-node G] [--partition P] [--time T] [--account A]
                     [--prepare-partition P] [--prepare-time T] [--accelerate-config NAME] [--dry-run] [--wait]
    smoldist chat    RUN_DIR ["What is 2 plus 3?"] [--system S] [--conversation FILE]   # no prompt: a session
    smoldist eval    RUN_DIR --data FILE --format gsm8k [--split S] [-n N] [--batch-size B] [--max-new-tokens M]
                     [--out FILE]
    smoldist eval    RUN_DIR --data openai/gsm8k [--data-config main|socratic] [--split test|train] ...
    smoldist eval    RUN_DIR --data FILE --format prompt_completion [--metric exact|json]   # your own task
    smoldist eval    RUN_DIR --loss
    smoldist eval    RUN_DIR --compare [BASE] (--data FILE | --loss)   # better than the model it started from?
    smoldist merge   RUN_DIR [OUT]
    smoldist configs                      # the accelerate configs shipped with smoldist
    smoldist recipes [--copy NAME DEST]   # the recipes shipped with smoldist; copy one to start your own

With no RECIPE, prepare, preview and train use the demo recipe shipped in the package (offline, CPU).
Errors in the recipe or the data print one line naming the problem and exit with status 2 (a non-finite step 4,
a full disk 5: smoldist/errors.py). Nothing
imports this module but the entry points (`smoldist`, `python -m smoldist`, `python -m smoldist.train`).
"""

from __future__ import annotations

import argparse
import sys

from smoldist import __version__
from smoldist.cluster.launcher import accelerate_spelling_hint, add_launch_arguments
from smoldist.cluster.submit import add_submit_arguments
from smoldist.errors import SmoldistError

GSM8K_BATCH = 8  # questions generated at once unless --batch-size says otherwise
RECIPE_HELP = (
    "a recipe file (default: the offline demo; `smoldist recipes` lists the shipped ones), then overrides "
    "such as train.learning_rate=1e-4"
)
RUN_DIR_HELP = "a run directory of `smoldist train` (its train.output_dir), or any model directory"


def split_recipe_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the recipe file; the rest are overrides."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoldist", description="Distributed SFT of chat models with TRL.")
    parser.add_argument("--version", action="version", version=f"smoldist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="template, tokenize, pack and store a recipe's data")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]", help=RECIPE_HELP)
    p.add_argument("--force", action="store_true", help="rebuild the store even if it exists")
    t = sub.add_parser("train", help="train a recipe with SFTTrainer (prepares the store if missing)")
    t.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]", help=RECIPE_HELP)
    add_launch_arguments(t)
    t.add_argument(
        "--fresh",
        action="store_true",
        help="start over: move train.output_dir (checkpoints, model, W&B id) to OUTPUT_DIR.old-<time> first",
    )
    v = sub.add_parser("preview", help="show the first records as the model sees them, trained tokens highlighted")
    v.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]", help=RECIPE_HELP)
    v.add_argument("-n", type=int, default=3, help="how many records (default: %(default)s)")
    m = sub.add_parser("submit", help="submit Slurm jobs: prepare (if needed), then train after it")
    m.add_argument("args", nargs="*", metavar="[RECIPE] [section.key=value]", help=RECIPE_HELP)
    add_submit_arguments(m)
    c = sub.add_parser("chat", help="answer a prompt (or each line of stdin) with a trained model, via its template")
    c.add_argument("run", metavar="RUN_DIR", help=RUN_DIR_HELP)
    c.add_argument(
        "prompt",
        nargs="?",
        help="the user turn to answer (default: a session that keeps the turns in a terminal; from a pipe, one "
        "fresh chat a line)",
    )
    c.add_argument("--system", help="the system prompt (default: the one the run trained with, via its template)")
    c.add_argument(
        "--conversation",
        metavar="FILE",
        help="answer the next assistant turn of this conversation (a JSON list of {role, content}, or one a line)",
    )
    c.add_argument(
        "--max-new-tokens",
        type=int,
        help="longest reply (default: the model's generation config, else 256); it stops at end of turn",
    )
    e = sub.add_parser("eval", help="score a model or run: gsm8k exact match (--data), or held-out loss (--loss)")
    e.add_argument("run", metavar="RUN_DIR", help=RUN_DIR_HELP + " (full or LoRA)")
    e.add_argument("--data", help="questions with gold answers: a jsonl/json/parquet file, saved dataset or hub id")
    e.add_argument(
        "--split", default="test", help="split of a hub or saved dataset given to --data (default: %(default)s)"
    )
    e.add_argument(
        "--data-config",
        metavar="NAME",
        help="config of a hub dataset given to --data, as a recipe source's `name` "
        "(default: main for openai/gsm8k, else none)",
    )
    e.add_argument(
        "--format",
        default="gsm8k",
        choices=["gsm8k", "prompt_completion"],
        help="how to read questions and gold answers (default: %(default)s); prompt_completion: your own task",
    )
    e.add_argument(
        "--metric",
        choices=["exact", "json"],
        help="prompt_completion: exact match (default), or json: parses as JSON, and equal to the gold as objects",
    )
    e.add_argument("-n", type=int, help="score only the first N questions (default: all)")
    e.add_argument(
        "--batch-size",
        type=int,
        help="questions generated at once (default: 8), or rows per loss batch (default: the run's own eval batch)",
    )
    e.add_argument(
        "--max-new-tokens", type=int, default=256, help="longest answer generated per question (default: %(default)s)"
    )
    e.add_argument("--out", help="write the result and every record as JSON here (default: print only)")
    e.add_argument("--loss", action="store_true", help="loss on the eval split of the store the run trained on")
    e.add_argument(
        "--compare",
        nargs="?",
        const="",
        metavar="BASE",
        help="score the model the run started from too (or BASE), on the same data, and say which is better",
    )
    g = sub.add_parser("merge", help="fold a LoRA run's adapter into its base model and save the full model")
    g.add_argument("run", metavar="RUN_DIR", help="a LoRA run directory of `smoldist train`")
    g.add_argument("out", nargs="?", help="where to write it (default: RUN_DIR-merged)")
    r = sub.add_parser("recipes", help="list the recipes shipped with smoldist, or copy one to start your own")
    r.add_argument("--copy", nargs=2, metavar=("NAME", "DEST"), help="write recipe NAME to the file DEST")
    sub.add_parser("configs", help="list the accelerate configs (names for --accelerate-config) and what each is for")
    return parser


def run_command(ns: argparse.Namespace) -> int:
    from smoldist.config import load_recipe

    if ns.command == "chat":
        return chat_command(ns)
    if ns.command in ("eval", "merge"):
        return run_model_command(ns)
    if ns.command in ("configs", "recipes"):
        from smoldist.cluster import shipped

        if ns.command == "recipes" and ns.copy:
            print(f"smoldist recipes: wrote {shipped.copy_recipe(*ns.copy)}")
        else:
            print(shipped.list_configs() if ns.command == "configs" else shipped.list_recipes())
        return 0
    path, overrides = split_recipe_args(ns.args)
    recipe = load_recipe(path, overrides)
    if ns.command == "prepare":
        from smoldist.store.build import prepare

        prepare(recipe.model, recipe.data, force=ns.force)
        return 0
    if ns.command == "submit":
        from smoldist.cluster.submit import JobRequest, submit

        res = submit(path, overrides, JobRequest.from_args(ns))
        return res.get("returncode", 0)
    if ns.command == "preview":
        from smoldist.store.preview import preview

        preview(recipe.model, recipe.data, n=ns.n)
        return 0
    from smoldist.cluster.launcher import plan_from_args
    from smoldist.cluster.spawn import spawn

    plan = plan_from_args(ns, path, overrides, recipe)  # one plan: --dry-run prints it, the run below runs it
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


def chat_command(ns: argparse.Namespace) -> int:
    from smoldist.eval.generate import chat_lines, continue_conversation, read_conversation

    if ns.conversation:
        print(continue_conversation(ns.run, read_conversation(ns.conversation), ns.max_new_tokens, ns.system))
        return 0
    session = ns.prompt is None and sys.stdin.isatty()
    if session:
        print("smoldist chat: a session; each line is your turn, the turns are kept; Ctrl-D ends", file=sys.stderr)
    prompts = [ns.prompt] if ns.prompt is not None else (line.strip() for line in sys.stdin if line.strip())
    for reply in chat_lines(ns.run, prompts, ns.max_new_tokens, ns.system, keep_turns=session):
        print(reply, flush=True)
    return 0


def run_model_command(ns: argparse.Namespace) -> int:
    """Commands that take a trained model or run rather than a recipe."""
    from smoldist.eval.results import write_json

    if ns.command == "merge":
        from smoldist.model.merge import merge

        print(f"smoldist merge: wrote {merge(ns.run, ns.out)}")
        return 0
    if ns.metric is not None and ns.format != "prompt_completion":
        raise SmoldistError(f"eval --metric {ns.metric}: scores --format prompt_completion; gsm8k reads `#### N`")
    if ns.compare is not None:
        return compare_command(ns)
    if ns.loss:
        from smoldist.eval.loss import eval_loss

        res = eval_loss(ns.run, ns.batch_size, ns.out)
        print(f"smoldist eval: {ns.run}: eval loss {res['eval_loss']:.4f} over {res['rows']} rows of {res['store']}")
        if "pairs" in res:  # a DPO run: TRL's held-out reward figures beside the loss
            print(
                f"smoldist eval: {res['pairs']} pairs: reward accuracy {res['eval_rewards/accuracies']:.1%}, "
                f"margin {res['eval_rewards/margins']:+.4f}"
            )
        return 0
    if not ns.data:
        raise SmoldistError("eval: give --data FILE (questions with gold answers) or --loss")
    if ns.format == "prompt_completion":
        from smoldist.eval.task import eval_task, summary_line

        batch = ns.batch_size or GSM8K_BATCH
        res = eval_task(ns.run, ns.data, ns.metric or "exact", ns.n, batch, ns.max_new_tokens, split=ns.split)
        write_json(ns.out, res)
        print(f"smoldist eval: {ns.run}: {summary_line(res)}" + (f"; wrote {ns.out}" if ns.out else ""))
        return 0
    from smoldist.eval.gsm8k import eval_gsm8k
    from smoldist.eval.results import print_gsm8k

    res = eval_gsm8k(
        ns.run,
        ns.data,
        ns.n,
        ns.batch_size or GSM8K_BATCH,
        ns.max_new_tokens,
        ns.out,
        split=ns.split,
        config=ns.data_config,
    )
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
        res = compare.compare_loss(ns.run, base, ns.batch_size)
    elif ns.data and ns.format == "prompt_completion":
        res = compare.compare_task(
            ns.run, base, ns.data, ns.metric or "exact", ns.n, ns.batch_size or GSM8K_BATCH, ns.max_new_tokens
        )
    elif ns.data:
        res = compare.compare_gsm8k(
            ns.run,
            base,
            ns.data,
            ns.n,
            ns.batch_size or GSM8K_BATCH,
            ns.max_new_tokens,
            split=ns.split,
            config=ns.data_config,
        )
    else:
        raise SmoldistError("eval --compare: give --data FILE (questions with gold answers) or --loss")
    print(f"smoldist eval: {ns.run}: {compare.summary(res)}")
    write_json(ns.out, res)
    return 0


def trl_hints(argv: list[str], command: str, unknown: list[str]) -> list[str]:
    """One line per TRL flag (`--learning_rate 1e-4`): the recipe override that does the same."""
    from smoldist.config.habits import flag_hint

    hints = []
    for i, arg in enumerate(argv):
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
        if arg in unknown and (hint := flag_hint(arg, value, command)):
            hints.append(hint)
    return hints


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)  # a TRL flag's value lands in args
    flags = [a for a in extra if a.startswith("-")]
    args = sys.argv[1:] if argv is None else argv
    hints = [h for h in (accelerate_spelling_hint(f, ns.command) for f in flags) if h] + trl_hints(
        args, ns.command, flags
    )
    if hints:
        parser.error(hints[0])
    if flags or (extra and not hasattr(ns, "args")):
        parser.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if extra:  # overrides written after options: `train RECIPE --dry-run train.lr=1`
        ns.args += extra
    try:
        return run_command(ns)
    except SmoldistError as e:
        print(f"smoldist: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves first): one line, not a traceback
        print(
            f"smoldist {ns.command}: interrupted (Ctrl-C); nothing more was written",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
