"""Markdown tables for the report and the claims table (one place that escapes a cell)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md(text: object) -> str:
    """One table cell: no pipes or newlines, long errors cut."""
    value = str(text).replace("|", "\\|").replace("\n", " ").strip()
    return value if len(value) <= 160 else value[:157] + "..."


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
    return lines
