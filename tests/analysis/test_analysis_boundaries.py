"""analysis reads the store on disk and nothing else of the orchestrator (the data flows one way), through the
store module, which needs no torch (issue #12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_analysis_imports_no_orchestrator_module():
    code = (
        "import sys, analysis.figures, analysis.claims, analysis.store; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'orchestrator'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_store_module_and_analysis_import_no_torch():
    code = (
        "import sys, contract.store, analysis.figures, analysis.claims, analysis.store, analysis.style; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
