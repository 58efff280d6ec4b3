"""docs/performance.md's measured tables are the bench JSON files' numbers (``python -m bench.report``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import report


def test_the_committed_doc_matches_the_committed_json(capsys: pytest.CaptureFixture) -> None:
    assert report.main(["--check"]) == 0, capsys.readouterr().err


def test_a_table_carries_its_json_numbers_machine_and_date() -> None:
    latest = json.loads((report.BENCH / "latest.json").read_text())
    table = report.latest_table()
    machine = latest["machine"]
    assert f"CPU family/model {machine['cpu_family_model']}" in table and machine["date"] in table
    assert f"| {latest['results']['pixel_update_ms']:.0f} |" in table
    met = latest["goals"]["concurrency_speedup"]["met"]
    [row] = [line for line in table.splitlines() if "`concurrency_speedup`" in line]
    assert row.endswith(": **not met** |" if not met else ": met |"), row


def test_a_stale_table_is_named_and_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = tmp_path / "performance.md"
    text = report.DOC.read_text()
    start = text.index("<!-- bench.report: baseline -->")
    edited = text[:start] + text[start:].replace("×", "x", 1)  # a hand edit inside one block
    doc.write_text(edited)
    assert report.main(["--check", "--doc", str(doc)]) == 1
    err = capsys.readouterr().err
    assert "stale bench.report block(s): baseline;" in err and "python -m bench.report" in err
    assert doc.read_text() == edited  # --check writes nothing
    assert report.main(["--doc", str(doc)]) == 0
    assert doc.read_text() == text and report.main(["--check", "--doc", str(doc)]) == 0


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: t.replace("bench.report: gpu -->", "bench.report: gpus -->"), "unknown bench.report block(s) gpus"),
        (
            lambda t: re.sub(
                r"<!-- bench\.report: workers -->.*?<!-- /bench\.report: workers -->\n", "", t, flags=re.S
            ),
            "no bench.report block for workers",
        ),
    ],
    ids=["unknown-name", "missing-block"],
)
def test_a_broken_marker_is_one_line_naming_the_doc(damage, message, tmp_path: Path, capsys) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(damage(report.DOC.read_text()))
    assert report.main(["--doc", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {doc}: ") and message in err and len(err.strip().splitlines()) == 1
