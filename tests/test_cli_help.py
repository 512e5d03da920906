"""Every sub-command's --help states the default of each option that has one."""
import argparse
import re

import pytest

from mlscale.cli import COMMANDS, build_parser


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option_blocks(help_text: str) -> dict[str, str]:
    """Option string -> its help block (the lines up to the next option) in --help."""
    blocks: dict[str, str] = {}
    current: list[str] = []
    for line in help_text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = [line]
            blocks[match.group(1)] = ""
        elif current:
            current.append(line)
        if match or current:
            key = list(blocks)[-1] if blocks else None
            if key is not None:
                blocks[key] = " ".join(x.strip() for x in current)
    return blocks


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_defaults(name):
    sub = _subparser(name)
    blocks = _option_blocks(sub.format_help())

    for action in sub._actions:
        if (not action.option_strings or action.help == argparse.SUPPRESS
                or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            continue
        block = blocks[action.option_strings[0]]
        assert "default" in block, f"mlscale {name} {action.option_strings[0]}: {block}"


def test_train_help_shows_a_number_default():
    text = " ".join(_subparser("train").format_help().split())
    assert "--epochs N training epochs (passes over all training points) (default: 100)" in text
