"""Draw every figure of every grid in a result store, and figures/report.md.

    python -m analysis.figures [--results results] [--out figures] [--grid NAME ...] [--diverged task_min|last]

Writes ``<out>/<grid>/<figure>.png`` and ``.pdf`` for each grid (the figures its grid file names in its key
``figures``), the grid's data exports ``<out>/<grid>/runs.parquet``, ``final.csv`` and ``final.tex``
(``analysis.export``) and ``<out>/report.md`` (with the claims table of ``analysis.claims``). Exit status 0 on
success, 2 when the results directory is missing, empty or not a result store, or a requested grid is not in it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.export import EXPORT_FILES, write_exports
from analysis.plots import GridData, figure_names, figures_for, unknown_figures
from analysis.report import write_report
from analysis.store import StoreError, load_store
from analysis.summary import Settings, add_settings_arguments, settings_from
from contract.grid_shows import grid_shows


def make_figures(
    results: Path | str, out: Path | str, grids: Sequence[str] | None = None, settings: Settings | None = None
) -> tuple[Path, dict[str, list[Path]]]:
    """Draw the figures of ``grids`` (default: every grid in the store); return (report path, files drawn by grid).

    Each drawn grid also gets its data exports (``analysis.export.EXPORT_FILES``) next to its figures; they are
    not among the files returned, which are the figures the report links. The report always covers every grid of
    the store; grids not drawn now link the files of an earlier run.

    Raises StoreError when ``results`` is not a store or a requested grid is absent.
    """
    settings = settings or Settings()
    store = load_store(results)
    for warning in store.warnings:  # trials left out (unreadable, damaged or hostile files): one line each
        print(f"warning: {warning}", file=sys.stderr)
    available = store.grids
    selected = list(dict.fromkeys(grids)) if grids else available
    missing = [g for g in selected if g not in available]
    if missing:
        raise StoreError(f"grid {', '.join(missing)} not in {results}; grids there: {', '.join(available)}")
    out = Path(out)
    for name in available:  # load_store takes only plain names from trial.json: never a path out of `out`
        if Path(name).name != name or name in ("", ".", ".."):
            raise StoreError(f"grid name {name!r} in {results} is not a plain directory name")
    files: dict[str, list[Path]] = {}
    grid_data = []
    for name in available:
        grid = GridData(store.grid(name), settings)
        shows = grid_shows(store.root, name)
        if name in selected:
            for unknown in unknown_figures(shows):
                print(f"warning: grid {name} names figure {unknown!r}, which this version has not", file=sys.stderr)
            files[name] = [path for fig in figures_for(name, shows) for path in fig(grid, out / name)]
            write_exports(grid, out / name)
        else:  # not redrawn: the report still covers it, linking whatever an earlier run left
            files[name] = [
                path
                for stem in figure_names(name, shows)
                for path in (out / name / f"{stem}.png", out / name / f"{stem}.pdf")
                if path.is_file()
            ]
        grid_data.append(grid)
    report = write_report(out, store, grid_data, files, str(results), drawn=selected)
    return report, {name: files[name] for name in selected}


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--results", default="results", help="result store root (default: results)")
    parser.add_argument("--out", default="figures", help="output directory (default: figures)")
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="NAME",
        help="only this grid (repeatable, or comma-separated); default: every grid in the store",
    )
    add_settings_arguments(parser)
    parser.add_argument("--dpi", type=int, default=150, help="PNG resolution (default: 150; PDFs are vector)")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m analysis.figures") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep figures`` through the bnsweep command)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    settings = settings_from(parser, args, dpi=args.dpi)
    grids = [g.strip() for item in args.grid or [] for g in item.split(",") if g.strip()] or None
    try:
        report, files = make_figures(args.results, args.out, grids, settings)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for grid, paths in files.items():
        print(f"{grid}: {len(paths)} files in {Path(args.out) / grid} (+ {', '.join(EXPORT_FILES)})")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
