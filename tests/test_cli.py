"""The command line itself: every argument documented, one name for the run directory, --version, accelerate's
spellings answered with the smoldist one."""

from __future__ import annotations

import argparse

import pytest

from smoldist.cli import main, make_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_argument_has_help_and_says_its_default(name):
    for action in arguments(subcommands()[name]):
        what = f"smoldist {name} {action.option_strings or action.dest}"
        assert action.help and action.help.strip(), f"{what}: no help text"
        if action.default not in (None, False, argparse.SUPPRESS) and action.nargs not in ("*", "?"):
            assert "%(default)s" in action.help or "default" in action.help, f"{what}: help does not say the default"


def test_chat_eval_and_merge_call_the_run_directory_the_same():
    metavars = {name: arguments(subcommands()[name])[0].metavar for name in ("chat", "eval", "merge")}
    assert set(metavars.values()) == {"RUN_DIR"}, metavars


def test_version(capsys):
    from smoldist import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"smoldist {__version__}"


@pytest.mark.parametrize(
    "flag, ours",
    [
        ("--num_processes", "--num-processes"),
        ("--config_file", "--accelerate-config"),
        ("--num_machines", "--num-machines"),
        ("--main_process_ip", "--main-process-ip"),
    ],
)
def test_accelerate_spellings_get_a_one_line_hint(flag, ours, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", flag, "2", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert f"{flag} is accelerate's spelling; smoldist train takes {ours}" in err[-1], err


@pytest.mark.parametrize(
    "args, hint",
    [
        (
            ["--learning_rate", "1e-4"],
            "--learning_rate is a TRL flag; smoldist train takes recipe overrides: write train.learning_rate=1e-4",
        ),
        (["--max_length", "512"], "write data.seq_len=512"),
        (["--model_name_or_path=HuggingFaceTB/SmolLM2-135M"], "write model.name_or_path=HuggingFaceTB/SmolLM2-135M"),
        (["--gradient_accumulation_steps", "4"], "write train.global_batch_tokens=... (tokens per optimiser step"),
        (["--bf16"], "write model.dtype=bfloat16"),
    ],
)
def test_trl_flags_get_a_one_line_hint_with_the_override_to_write(args, hint, capsys):
    with pytest.raises(SystemExit) as e:  # before: "unrecognized arguments", no hint
        main(["train", "recipe.yaml", *args])
    assert e.value.code == 2
    assert hint in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_flat_trl_or_axolotl_yaml_is_recognised_and_every_key_mapped(tmp_path):
    from smoldist.config import load_recipe
    from smoldist.errors import RecipeError

    flat = tmp_path / "axolotl.yaml"
    flat.write_text(
        "base_model: HuggingFaceTB/SmolLM2-135M\ndatasets:\n  - path: chats.jsonl\n    type: chat_template\n"
        "sequence_len: 2048\nmicro_batch_size: 2\nlearning_rate: 1.0e-4\n"
    )
    with pytest.raises(RecipeError) as e:  # before: "unknown section 'base_model'" and nothing about the rest
        load_recipe(flat)
    msg = str(e.value)
    assert "flat TRL/axolotl config" in msg and "\n" not in msg
    for pair in (
        "base_model -> model.name_or_path",
        "datasets -> data.sources",
        "sequence_len -> data.seq_len",
        "micro_batch_size -> train.per_device_train_batch_size",
        "learning_rate -> train.learning_rate",
    ):
        assert pair in msg, msg


def test_accelerate_launch_with_num_processes_but_one_process_says_what_to_write(tiny_recipe, tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "ACCELERATE_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), CUDA_VISIBLE_DEVICES="")  # no default accelerate config, no GPU
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "-m",
            "smoldist.train",
            str(tiny_recipe),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    # before: one process trained alone (world size 1 only in its start line) and exited 0; accelerate's simple
    # launcher reports the rank's exit 2 with a traceback of its own, which a rank cannot stop
    assert p.returncode != 0, p.stdout[-2000:] + p.stderr[-2000:]
    line = [x for x in p.stderr.splitlines() if x.startswith("smoldist: error:")]
    assert len(line) == 1 and "accelerate launch --num_processes 2 started 1 process(es)" in line[0], p.stderr[-2000:]
    assert "smoldist train RECIPE --num-processes 2" in line[0] and "cpu_ddp.yaml --num_processes 2" in line[0]
    assert not (tmp_path / "run").exists()
