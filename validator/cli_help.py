"""Help text for the ``validator`` command: every option says its default, or that it is
required, without each ``add_argument`` repeating it.

``Parser`` is the ``validator`` command's parser class; ``add_subparsers`` hands its type to
every subcommand (and their subcommands), so every option of every module that registers
commands gets ``DefaultsFormatter``. ``tests/unit/test_cli_help.py`` walks them all.
"""

from __future__ import annotations

import argparse
from typing import Any

# An option whose help already speaks of its default (or says it is required) is left as
# written: "(default: the spec's)" explains more than "(default: )".
_ALREADY_SAID = ("default", "required")


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)", "(default: off)" for flags, or "(required)" to each option's
    help. A default of None or "" is not printed: its help must say what it means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.help is argparse.SUPPRESS \
                or any(word in text.lower() for word in _ALREADY_SAID):
            return action.help
        suffix = self.default_text(action)
        return f"{text} ({suffix})".strip() if suffix else action.help

    @staticmethod
    def default_text(action: argparse.Action) -> str | None:
        """What the help appends for ``action``, or None if the default says nothing."""
        if action.required:
            return "required"
        if isinstance(action, argparse._StoreTrueAction):
            return "default: off"
        if isinstance(action, argparse._StoreFalseAction):
            return "default: on"
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return None
        default = action.default
        if default is None or default == "" or default is argparse.SUPPRESS:
            return None
        if isinstance(default, list):
            return "default: none" if not default else f"default: {' '.join(map(str, default))}"
        return "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``DefaultsFormatter`` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
