"""``make test`` runs on two pytest-xdist workers: a module, or a directory sharing a session fixture, stays whole."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = ["tests/analysis/test_analysis_stats.py", "tests/analysis/test_analysis_boundaries.py"]  # one directory
ALONE = "tests/contract/test_status_machine.py"


def test_a_directory_sharing_a_session_fixture_runs_on_one_worker() -> None:
    # Three modules, two work units, two workers: xdist's default would spread every module's tests over both.
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *SHARED, ALONE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, module in re.findall(r"\[(gw\d+)\].*?PASSED (tests/\S+?\.py)::", run.stdout):
        workers[module].add(worker)
    assert set(workers) == {*SHARED, ALONE}
    assert all(len(found) == 1 for found in workers.values()), dict(workers)
    assert workers[SHARED[0]] == workers[SHARED[1]] != workers[ALONE]
