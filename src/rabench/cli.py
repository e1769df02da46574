"""The `rabench` command line: assembles the subcommands of `rabench.commands`."""

from __future__ import annotations

import argparse
import re
from typing import Any

from rabench import __version__
from rabench.errors import HANDLED, RabenchError, exit_status


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input in one line instead of usage plus error.

    A value that starts with a minus and a digit (-1e-3, -5m, -.5) is a value, not an option:
    argparse only knows plain negative numbers, so `--lr -1e-3` got "expected one argument"
    where the value's own check says what is wrong with it (no rabench option starts with a digit)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from rabench.commands import COMMANDS

    parser = OneLineParser(prog="rabench", description="rabench: does Reciprocal Attention (RA) beat standard attention "
                           "when you pay for it in wall-clock time? Typical flow: prepare -> suite (or train) -> report.")
    parser.add_argument("--version", action="version", version=f"rabench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def refuse_empty_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An empty or blank value given to any flag or argument is an error naming it: commands read an
    absent value as "use the default", so `--seeds "$SEEDS"` with SEEDS unset would silently run
    another experiment (the default seeds, the default plan, the current folder)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[args.command]._actions:
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if value != action.default and any(isinstance(v, str) and not v.strip() for v in values):
            name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest).upper()
            leave_out = "" if action.required else ", or leave it out for the default"  # positionals too
            raise RabenchError(f"{name} is empty (an unset shell variable?); give a value{leave_out}")


def main(argv: list[str] | None = None) -> int:
    from rabench.commands import COMMANDS

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        refuse_empty_values(parser, args)
        status = COMMANDS[args.command].run(args)  # None, or an exit status (check: 1 when a check failed)
    except HANDLED as exc:  # one line and the documented exit code (errors.exit_status); a bug keeps its traceback
        return exit_status(exc)
    return status or 0


if __name__ == "__main__":
    raise SystemExit(main())
