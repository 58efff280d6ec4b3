"""``bnsweep``: the project's command line (``bnsweep --help``; ``pip install -e .`` installs it).

Each subcommand hands the rest of its command line, unchanged, to an existing ``main(argv)``,
imported only when that subcommand runs (``bnsweep --help`` imports no torch, Ray or pandas);
the subcommand's exit code is ``bnsweep``'s, and ``bnsweep COMMAND --help`` is that main's help.
``python -m orchestrator.cli`` is the same command without the installed script.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

PROG = "bnsweep"

# command: (module whose main(argv) -> int runs it, one line for the overview)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("agent.train", "one trial: key=value ... [config=FILE.yaml] [out=DIR]"),
    "sweep": (
        "orchestrator.sweep",
        "run a grid of sweeps/ on a profile through Ray Tune, then draw its figures (--dry-run: the plan only)",
    ),
    "figures": ("analysis.figures", "redraw every figure and figures/report.md from the result store"),
    "bench": ("bench.run", "the benchmark suite -> bench/latest.json (--quick: smoke)"),
    "claims": ("analysis.claims", "print the claims table of the paper's findings from the result store"),
}

EPILOG = """\
examples:
  bnsweep sweep --grid smoke --dry-run
  bnsweep train task=cartpole_swingup obs_type=states num_frames=20000 out=runs/demo
  bnsweep figures --results results --out figures

`bnsweep COMMAND --help` prints that command's own options. The Makefile targets call these
commands (make help); exit codes are the command's own (sweep: 0 all finished, 1 a trial failed
or is unfinished, 2 nothing launched)."""


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bnsweep")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Batch-normalization mode study of DrQ-v2: trials, sweeps, figures, benchmarks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module, summary) in COMMANDS.items():
        # No options of its own (add_help=False): --help and everything else go to the command's main.
        commands.add_parser(name, help=summary, add_help=False, description=f"{summary} ({module}.main)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # The first word that is not an option is the command: bnsweep's own options (-h, --version) take no value.
    position = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if position is None:
        parser.parse_args(argv)  # -h / --version exit here; an unknown option is an error (exit 2)
        parser.error(f"a command is required: one of {', '.join(COMMANDS)} (bnsweep --help)")
    name, rest = argv[position], argv[position + 1 :]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}: expected one of {', '.join(COMMANDS)} (bnsweep --help)")
    parser.parse_args(argv[: position + 1])  # bnsweep's own options before the command (-h, --version, typos)
    module, _ = COMMANDS[name]
    command_main = importlib.import_module(module).main
    # Each main takes its program name for usage and error lines ("usage: bnsweep sweep"); its default is the
    # `python -m` form, for running the module directly.
    return int(command_main(rest, prog=f"{PROG} {name}") or 0)


if __name__ == "__main__":
    sys.exit(main())
