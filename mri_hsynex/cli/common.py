"""Flags shared by every command (defined once) and the error-handling runner."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import HsynexError


def add_compute_flags(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` and ``--cpu``, FreeSurfer style."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="number of CPU threads (default: all)")
    parser.add_argument("--cpu", action="store_true", help="never use a GPU")


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="folder with the networks (default: $HSYNEX_MODELS, "
                             "then the models shipped with hsynex)")


def add_volume_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-pv", dest="partial_volume", action="store_false", default=None,
                        help="soft volumes = the posteriors summed, without the partial-volume "
                             "correction (default: corrected, unless the model folder's "
                             "model.json says \"partial_volume\": false; docs/segment.md)")


def add_seed_flag(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, metavar="S", help="random seed")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks for errors")


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with hsynex's common look and the ``--debug`` flag."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_debug_flag(parser)
    return parser


def user_errors(work: Callable[[], object]) -> int:
    """Run ``work()``: 0, or 1 with one ``ERROR:`` line on stderr for a user error
    (``HsynexError``). For the small developer tools that take positional words, not flags."""
    try:
        work()
    except HsynexError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


def run(build_parser: Callable[[], argparse.ArgumentParser],
        work: Callable[[argparse.Namespace], int | None],
        argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``work``; help on no arguments (exit 1), ``ERROR:`` lines on errors.

    Usage errors exit 2 (argparse), user errors (``HsynexError``) print one ``ERROR: what: path``
    line to stderr and exit 1; ``--debug`` re-raises them with a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 1
    args = parser.parse_args(argv)
    try:
        status = work(args)
    except HsynexError as err:
        if getattr(args, "debug", False):
            raise
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)
