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
