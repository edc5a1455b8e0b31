"""``genunlearn`` entry point: builds the sub-command parsers and turns user errors into messages."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = (
    "ls", "data", "testbed", "generate", "erase", "eval", "attack", "bench", "report", "export",
)  # fmt: skip


def add_set_argument(p: argparse.ArgumentParser, what: str) -> None:
    """The shared ``--set KEY=VALUE ...`` option (config overrides, values parsed as YAML)."""
    p.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help=f"{what} overrides, e.g. --set steps=50 lr=1e-5",
    )  # fmt: skip


def add_overwrite_argument(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: allow an output file that already exists to be replaced."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def check_output_file(path: str | None, overwrite: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output file that would replace something the user has.

    Raises:
        GenUnlearnError: ``path`` is a directory, or an existing file without ``--overwrite``.
    """
    from pathlib import Path

    from genunlearn.types import GenUnlearnError

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise GenUnlearnError(f"{option} {p} is a directory; give a file path")
    if p.exists() and not overwrite:
        raise GenUnlearnError(
            f"{option} {p} already exists; choose a new file or pass --overwrite to replace it"
        )


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2): what was wrong, and where the valid forms are."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="genunlearn",
        description="Machine unlearning for generative image models: erase concepts, attack the "
        "erased model, benchmark methods (toy-sd testbed built in).",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"genunlearn.cli.{name}_cmd")
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, with a one-line message)."""
    from genunlearn.types import GenUnlearnError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except GenUnlearnError as e:
        print(f"genunlearn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `genunlearn data split ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
