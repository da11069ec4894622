"""Launch planning: the exact `accelerate launch` command for each node, and spawning it.

    smoldist train RECIPE --accelerate-config multi_gpu --num-processes 8
    smoldist train RECIPE --accelerate-config zero3 --num-machines 4 --gpus-per-node 8 --dry-run
    smoldist train RECIPE --num-processes 2        # no config named: multi_gpu with GPUs, else cpu_ddp

One plan serves --dry-run and the run (`plan_from_args`): what runs is what the dry run shows. Without any
launch flag, `smoldist train` trains in its own process, and the dry run says so.

accelerate's `--num_processes` counts processes on ALL machines; `--machine_rank` differs per node
and must be evaluated on that node (by launch/node.sh under Slurm), never in the batch step.
Every command sets SMOLDIST_EXPECTED_WORLD_SIZE, so each rank can refuse a world that is not the
promised one, and passes `--mixed_precision` from the recipe's `model.dtype`: the config's `mixed_precision`
would otherwise decide (a float32 recipe under a config that says bf16 would train under bf16 autocast).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from smoldist.cluster.shipped import known_configs
from smoldist.config import Recipe
from smoldist.config.batch import check_world_sizes
from smoldist.distributed.state import EXPECTED_WORLD_ENV, count_gpus
from smoldist.errors import RecipeError
from smoldist.model.precision import mixed_precision


def find_accelerate_config(name: str) -> Path:
    """A path as given, or a name from accelerate_configs/ (here, else the ones shipped in the package)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    known = known_configs()
    if name in known:
        return known[name]
    raise RecipeError(
        f"--accelerate-config: '{name}' is neither a file nor one of: {', '.join(known)} "
        "(`smoldist configs` describes them)"
    )


@dataclass
class LaunchPlan:
    config: Path | None  # None: one process, run in the `smoldist train` process itself (no launcher)
    recipe: str | None
    overrides: list[str]
    num_machines: int = 1
    procs_per_machine: int = 1
    main_ip: str = "127.0.0.1"
    main_port: int = 29500
    mixed_precision: str | None = None  # from the recipe; None: the config's

    @property
    def world_size(self) -> int:
        return self.num_machines * self.procs_per_machine

    def command(self, machine_rank: int | str) -> list[str]:
        if self.config is None:  # what the in-process run amounts to
            return [sys.executable, "-m", "smoldist.train", *([self.recipe] if self.recipe else []), *self.overrides]
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if self.mixed_precision:
            cmd += ["--mixed_precision", self.mixed_precision]
        cmd += [
            "--config_file",
            str(self.config),
            "--num_processes",
            str(self.world_size),
            "--num_machines",
            str(self.num_machines),
        ]
        if self.num_machines > 1:
            cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", self.main_ip]
        cmd += ["--main_process_port", str(self.main_port), "-m", "smoldist.train"]
        return cmd + ([self.recipe] if self.recipe else []) + list(self.overrides)

    def env(self) -> dict[str, str]:
        return {} if self.config is None else {EXPECTED_WORLD_ENV: str(self.world_size)}

    def describe(self, only_rank: int | None = None) -> str:
        """What --dry-run prints: one line per node (or just `only_rank`'s), ready to paste."""
        if self.config is None:
            head = (
                "# 1 process, world size 1: runs in this process, no launcher "
                "(--num-processes N or --accelerate-config NAME starts one)"
            )
        else:
            head = (
                f"# {self.num_machines} node(s) x {self.procs_per_machine} process(es) = world size "
                f"{self.world_size}, config {self.config}"
            )
        return "\n".join(
            [head] + [self.node_line(rank) for rank in (range(self.num_machines) if only_rank is None else [only_rank])]
        )

    def node_line(self, machine_rank: int) -> str:
        """One node's command with its environment, as --dry-run prints it and `spawn` runs it."""
        env = [f"{k}={v}" for k, v in self.env().items()]
        return f"node {machine_rank}: {' '.join([*env, shlex.join(self.command(machine_rank))])}"


def default_config(world_size: int, num_machines: int, gpus_named: bool) -> str | None:
    """The config when none is named: one local process needs no launcher; more need DDP, on GPUs when there are
    (or --gpus-per-node says so), else over gloo on CPU (cpu_ddp, never `--cpu`, which silently runs one)."""
    if world_size == 1 and num_machines == 1:
        return None
    return "multi_gpu" if gpus_named or count_gpus() else "cpu_ddp"


def recipe_precision(r: Recipe, config: Path) -> str:
    """The recipe's autocast for this accelerate config (fp16 needs GPUs: a `use_cpu` config gets 'no')."""
    import yaml

    on_gpu = not (yaml.safe_load(config.read_text()) or {}).get("use_cpu", False)
    return mixed_precision(r.model.dtype, r.model.master_weights, r.train, on_gpu)


def main_process_ip(ns) -> str:
    """Machine 0's address: as given, else MASTER_ADDR (what slurm/train.sbatch exports); one machine needs none."""
    ip = ns.main_process_ip or os.environ.get("MASTER_ADDR")
    if ip or (ns.num_machines or 1) == 1:
        return ip or "127.0.0.1"
    raise RecipeError(
        f"--num-machines {ns.num_machines}: give --main-process-ip ADDRESS, the address of machine 0 "
        "that every machine can reach (under Slurm launch/node.sh passes it from MASTER_ADDR)"
    )


def plan_from_args(ns, recipe: str | None, overrides: list[str], loaded: Recipe) -> LaunchPlan:
    """The one plan `smoldist train` both prints (--dry-run) and runs: what runs is what the dry run shows.
    `loaded` is the recipe `recipe` + `overrides` already read (its precision goes into the launch)."""
    if not (ns.accelerate_config or ns.num_processes or ns.gpus_per_node or ns.num_machines):
        if ns.dry_run:  # the run checks it itself, at once, knowing the world of a checkpoint it resumes
            check_world_sizes(loaded.train, loaded.data.seq_len, {1: "one process, no launcher"})
        return LaunchPlan(config=None, recipe=recipe, overrides=overrides)  # plain `smoldist train`: this process
    per_node = ns.gpus_per_node or ns.num_processes or count_gpus() or 1
    if ns.num_processes and ns.num_machines and ns.num_processes % ns.num_machines:
        raise RecipeError(f"--num-processes {ns.num_processes} is not divisible by --num-machines {ns.num_machines}")
    if ns.num_processes and ns.num_machines:
        per_node = ns.num_processes // ns.num_machines
    name = ns.accelerate_config or default_config(
        per_node * (ns.num_machines or 1), ns.num_machines or 1, ns.gpus_per_node is not None
    )
    config = name and find_accelerate_config(name)
    machines = ns.num_machines or 1  # a batch the world cannot split is refused here, before any rank starts
    check_world_sizes(loaded.train, loaded.data.seq_len, {per_node * machines: f"{machines} node(s) x {per_node}"})
    return LaunchPlan(
        config=config,
        recipe=recipe,
        overrides=overrides,
        num_machines=ns.num_machines or 1,
        procs_per_machine=per_node,
        main_ip=main_process_ip(ns),
        main_port=ns.main_process_port,
        mixed_precision=config and recipe_precision(loaded, config),
    )


def add_launch_arguments(parser) -> None:
    g = parser.add_argument_group("launching (spawns `accelerate launch` for you)")
    g.add_argument(
        "--accelerate-config", help="a name in accelerate_configs/ (cpu_ddp, multi_gpu, zero3, ...) or a path"
    )
    g.add_argument("--num-processes", type=int, help="processes in total across all machines")
    g.add_argument("--gpus-per-node", type=int, help="processes per machine (default: GPUs found, else 1)")
    g.add_argument("--num-machines", type=int, help="machines (nodes) in the job (default: 1)")
    g.add_argument(
        "--machine-rank", type=int, default=None, help="this machine's rank (evaluate it on the node); default 0"
    )
    g.add_argument(
        "--main-process-ip", help="address of machine 0; required with --num-machines > 1 (default: $MASTER_ADDR)"
    )
    g.add_argument(
        "--main-process-port",
        type=int,
        default=29500,
        help="port on machine 0 where the processes meet (default: %(default)s)",
    )
    g.add_argument("--dry-run", action="store_true", help="print the command for every node and exit")


# accelerate launch's own flags, as a user who knows accelerate types them, and what smoldist calls them
ACCELERATE_SPELLINGS = {
    "--config_file": "--accelerate-config",
    "--num_processes": "--num-processes",
    "--num_machines": "--num-machines",
    "--machine_rank": "--machine-rank",
    "--main_process_ip": "--main-process-ip",
    "--main_process_port": "--main-process-port",
}


def accelerate_spelling_hint(flag: str, command: str) -> str | None:
    """One line for an accelerate spelling given to a smoldist command, else None."""
    ours = ACCELERATE_SPELLINGS.get(flag.split("=", 1)[0])
    return ours and f"{flag.split('=', 1)[0]} is accelerate's spelling; smoldist {command} takes {ours}"
