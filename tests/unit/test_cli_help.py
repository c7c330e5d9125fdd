"""Every option of every `validator` subcommand (and sub-subcommand) has help text that says
its default or that it is required; `validator --version` prints the installed version."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

from validator.cli import build_parser
from validator.cli_help import DefaultsFormatter


def _parsers(parser: argparse.ArgumentParser, path: str = "validator"):
    """(command path, parser) for `parser` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _options():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield path, parser, action


def _rendered_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    assert isinstance(formatter, DefaultsFormatter), "every parser uses DefaultsFormatter"
    return formatter._expand_help(action) if action.help else ""


def test_the_walk_reaches_every_command() -> None:
    paths = {path for path, _ in _parsers(build_parser())}
    assert {"validator join", "validator devnet", "validator localchain", "validator provide",
            "validator probe", "validator provider status", "validator claim",
            "validator pool init", "validator pool show"} <= paths
    assert sum(1 for _ in _options()) > 50


def test_every_option_has_help_that_states_its_default() -> None:
    missing = []
    for path, parser, action in _options():
        text = _rendered_help(parser, action)
        if isinstance(action, argparse._VersionAction):
            continue
        if not text.strip() or not ("default" in text.lower() or "required" in text.lower()):
            missing.append(f"{path} {'/'.join(action.option_strings)}: {text!r}")
    assert not missing, "options without help or a stated default:\n" + "\n".join(missing)


def test_defaults_shown_are_the_real_defaults() -> None:
    """Where the formatter adds the default, it is the value argparse would use."""
    checked = 0
    for _path, parser, action in _options():
        if isinstance(action, argparse._VersionAction) or (
                action.help and "default" in action.help.lower()):
            continue  # the author wrote the default in words
        text = _rendered_help(parser, action)
        if action.required:
            assert text.endswith("(required)"), text
        elif isinstance(action, argparse._StoreTrueAction):
            assert text.endswith("(default: off)"), text
        elif isinstance(action.default, (int, float, str)) and action.default != "":
            assert text.endswith(f"(default: {action.default})"), text
            checked += 1
    assert checked >= 5


def test_long_running_commands_take_log_options() -> None:
    commands = dict(_parsers(build_parser()))
    for name in ("join", "provide", "devnet", "localchain"):
        flags = {s for a in commands[f"validator {name}"]._actions for s in a.option_strings}
        assert {"--log-level", "--log-format"} <= flags, name


def test_version() -> None:
    """As a process: main() also configures logging, which must not leak into this one."""
    done = subprocess.run([sys.executable, "-m", "validator.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"validator {version('bwpool-validator')}"
