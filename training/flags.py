"""The training command line, generated from Config's fields: `python run.py [flags]` (and `--config FILE.yaml`).

Each setting is described once, on its Config field (engine.config.setting): its flag, help, metavar,
choices and group come from there, and so does the command-line reference in docs/command-line.md
(`python -m training.flags --markdown`; tests/test_docs.py checks that it is current).
"""
from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import Field, fields

from core.cli import HelpFormatter, OneLineParser
from engine.config import Config

DESCRIPTION = ("Train the ERA S10 custom ResNet on CIFAR-10 (defaults = the assignment). After training: python "
               "run.py predict MODEL.pt IMAGES... and python run.py export MODEL.pt --onnx OUT.onnx (each with --help).")
CONFIG_HELP = ("read settings from a YAML file (keys = the long flags, e.g. batch_size: 512); flags on the command line "
               "override it. Every run writes its settings to OUTPUT/config.yaml")


def value_type(hint) -> tuple[type, bool]:
    """(the value's type, whether None is allowed) of a Config annotation such as `int | None` or `list[str]`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        return kinds[0], True
    return hint, False


def flag_names(f: Field) -> list[str]:
    """The flag(s) of a Config field, as --help shows them: a switch whose default is on is --no-NAME."""
    name = (f.metadata.get("flag") or f.name).replace("_", "-")
    kind, optional = value_type(typing.get_type_hints(Config)[f.name])
    if kind is bool and not optional and f.default is True:
        return [f"--no-{name}"]
    if kind is bool and optional:
        return [f"--{name}", f"--no-{name}"]
    return [f"--{name}"]


def add_setting(group, f: Field) -> None:
    """One argparse argument for one Config field, from its metadata."""
    meta, (kind, optional) = f.metadata, value_type(typing.get_type_hints(Config)[f.name])
    common = dict(dest=f.name, help=meta["help"])
    if kind is bool:
        action = argparse.BooleanOptionalAction if optional else ("store_false" if f.default else "store_true")
        group.add_argument(flag_names(f)[0], action=action, default=f.default, **common)
    elif typing.get_origin(kind) is list:
        group.add_argument(*flag_names(f), action="append", default=[], metavar=meta["metavar"], **common)
    else:
        group.add_argument(*flag_names(f), type=kind, default=f.default, metavar=meta["metavar"],
                           choices=meta["choices"], **common)


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Config):
        group = groups.get(f.metadata["group"]) or groups.setdefault(
            f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        add_setting(group, f)
    return parser


def parse_args(argv=None) -> Config:
    """Flags -> Config. With --config FILE.yaml the file's settings replace the defaults, and flags given
    on the command line override the file. UserError for a bad file."""
    from engine.config import config_file_values

    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config is not None:
        parser.set_defaults(**config_file_values(pre.config))
    args = parser.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def markdown_reference() -> str:
    """docs/command-line.md: every flag, its default and its help, by group (generated from Config)."""
    lines = ["# Command line", "", "Generated from `engine/config.py` by `python -m training.flags --markdown`; "
             "`python run.py --help` says the same.", "", "| flag | default | what it does |", "|---|---|---|",
             f"| `--config FILE.yaml` | | {CONFIG_HELP} |"]
    group = None
    for f in fields(Config):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines.append(f"| **{group}** | | |")
        meta = f.metadata
        shown = " ".join(f"`{name}{' ' + meta['metavar'] if meta['metavar'] and len(flag_names(f)) == 1 else ''}`"
                         for name in flag_names(f))
        plain = isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool)
        default = f"`{f.default}`" if plain else ""
        choices = f" Choices: {', '.join(meta['choices'])}." if meta["choices"] and not meta["metavar"] else ""
        lines.append(f"| {shown} | {default} | {meta['help'].replace('%%', '%').replace('|', '/')}{choices} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown_reference(), end="")
    else:
        build_parser().print_help()
