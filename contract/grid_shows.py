"""What a grid shows: the figures and the claims its YAML names (the grid keys ``figures`` and ``claims``).

The orchestrator validates these keys with the rest of the grid (``orchestrator.grid_schema``); this module only
reads them, so that the analysis can learn a grid's figures and claims without the orchestrator: from the grid
files shipped in ``sweeps/`` and, for a grid of one's own, from the grid text the store records for each profile
run (``<results>/<grid>/_sweep/<profile>.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from contract.files import read_json_object, read_regular_text
from contract.store import SWEEP_DIR, grid_dir, is_plain_name
from contract.yamlio import MAX_YAML_BYTES, load_yaml

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"  # the shipped grids: sweeps/*.yaml
PROFILES_DIR = SWEEPS_DIR / "profiles"  # profiles that grids share (a profile's `extends`), not grids


@dataclass(frozen=True)
class GridShows:
    """The figure names and claim ids one grid declares (empty: the grid declares none)."""

    figures: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()


def shows_of(data: Any, source: str) -> GridShows:
    """The ``figures`` and ``claims`` of a grid's parsed YAML; ValueError naming ``source`` when malformed."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: not a mapping of grid keys")
    names: dict[str, tuple[str, ...]] = {}
    for key in ("figures", "claims"):
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{source}: {key}: expected a list of names, got {value!r}")
        names[key] = tuple(value)
    return GridShows(**names)


def grid_files(sweeps_dir: Path = SWEEPS_DIR) -> list[Path]:
    """The shipped grid files (the shared profiles live one level down and are not grids)."""
    return sorted(sweeps_dir.glob("*.yaml"))


def grid_name(data: Any, path: Path) -> str:
    """A grid's name: its ``name`` key, else its file name (as the orchestrator names it)."""
    name = data.get("name") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name else path.stem


@cache
def shipped_shows(sweeps_dir: Path = SWEEPS_DIR) -> dict[str, GridShows]:
    """Every grid file in ``sweeps_dir`` by grid name, with its declarations, in file order.

    A file that cannot be read as a grid is left out: the orchestrator refuses to run it with a message naming
    the problem, and the analysis of a store must not fail because someone is editing a grid beside the others.
    """
    shows = {}
    for path in grid_files(sweeps_dir):
        try:
            data = load_yaml(read_regular_text(path, MAX_YAML_BYTES), str(path))
            shows[grid_name(data, path)] = shows_of(data, str(path))
        except (OSError, ValueError):  # YamlError and UnicodeDecodeError are ValueErrors
            continue
    return shows


def recorded_shows(results: Path, grid: str) -> GridShows | None:
    """The declarations in the grid text that the newest profile run of ``grid`` recorded in the store ``results``.

    None when no run recorded a grid text that reads as a grid: a store is untrusted input, and a view of it (the
    figures, the claims table) falls back to what a grid that declares nothing shows rather than fail.
    """
    if not is_plain_name(grid):  # a name a store's own files gave (trial.json): no grid directory of the store
        return None
    records = []
    for path in (grid_dir(results, grid) / SWEEP_DIR).glob("*.json"):
        record = read_json_object(path)
        if record is not None and isinstance(record.get("grid_text"), str):
            records.append((str(record.get("updated_at", "")), str(path), record["grid_text"]))
    if not records:
        return None
    _, source, text = max(records)
    try:
        return shows_of(load_yaml(text, source), source)
    except ValueError:  # YamlError is one
        return None


def grid_shows(results: Path, grid: str) -> GridShows:
    """What ``grid`` shows: a shipped grid's own file, else the grid text its runs recorded, else nothing."""
    shipped = shipped_shows()
    if grid in shipped:
        return shipped[grid]
    return recorded_shows(results, grid) or GridShows()
