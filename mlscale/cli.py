"""The ``mlscale`` command line: one sub-command per module in ``mlscale.commands``.

Every sub-command runs on all ranks of the job (``mpiexec -n N mlscale ...``).
User errors (:class:`MlscaleError`) print one line ``mlscale: error: ...`` on rank 0
and exit with status 1 on every rank; an unexpected exception aborts the whole MPI
job so that no rank hangs, and so does SIGINT or SIGTERM on any rank of a multi-rank
job (:mod:`mlscale.signals`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from . import __version__
from .errors import MlscaleError
from .parallel import check_launch, fail_all, world
from .progress import set_quiet
from .signals import abort_on_signals

# sub-command name -> module in mlscale.commands (each has add_arguments(parser), run(args, comm))
COMMANDS = {
    "predict": "predict",
    "descriptors": "descriptors",
    "electrons": "electrons",
    "train": "train",
    "energy": "energy",
    "datagen": "datagen",
    "info": "info",
    "import-mala": "import_mala",
    "bench": "bench",
    "plan": "plan",
    "stm": "stm",
    "plot": "plot",
    "qe-density": "qe_density",
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help text that ends with "(default: X)" for every option whose default is a value
    (not None, not False, not suppressed) and whose help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or "%(default)" in text or "default:" in text or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def _help_for_bare_defaults(parser: argparse.ArgumentParser) -> None:
    """Options given without help text still show their default in --help."""
    for action in parser._actions:
        if (not action.help and action.option_strings
                and action.default not in (None, False, argparse.SUPPRESS)):
            action.help = "(default: %(default)s)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command; with ``only``, that sub-command's module alone is
    imported (a run loads only what its command needs: ``predict`` no torch, no libxc)."""
    parser = argparse.ArgumentParser(prog="mlscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mlscale {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they show only on a terminal anyway)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module = importlib.import_module(f"mlscale.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        sub_parser = sub.add_parser(name, help=doc[0] if doc else None,
                                    description=module.__doc__,
                                    formatter_class=DefaultsHelpFormatter)
        module.add_arguments(sub_parser)
        _help_for_bare_defaults(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    comm = world()
    abort_on_signals(comm)  # SIGINT/SIGTERM on one rank: MPI_Abort, no rank left waiting
    try:
        check_launch(comm)  # srun without the MPI plugin: N worlds of one rank
        status = args._module.run(args, comm)
    except MlscaleError as error:
        comm.print(f"mlscale: error: {error}", file=sys.stderr)
        return _exit(1)
    except KeyboardInterrupt:
        return _exit(130)
    except Exception:  # noqa: BLE001
        fail_all(comm, traceback.format_exc())
    return _exit(status or 0)


def _exit(status: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
