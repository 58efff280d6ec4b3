import os

import pytest

# Headless rendering for every test process (the Makefile sets it too).
os.environ.setdefault("MUJOCO_GL", "egl")
# One torch thread per test process: tiny networks gain nothing from two, and two
# threads spinning on a busy 2-core machine made a 4 s trial take minutes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Directories whose tests share an expensive session fixture (a trained TINY trial, the synthetic store of
# every grid): spread over pytest-xdist workers, each worker would build its own copy.
SHARED_SESSION_FIXTURES = ("faults", "analysis")


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs as a whole: a test's module (its module fixtures, a local Ray among them,
    are built once), or its directory where the directory shares a session fixture."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARED_SESSION_FIXTURES:
        return "/".join(parts[:2])
    return path


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist (make test's `-n 2`); absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``-n N`` with xdist's default ``--dist load`` would send single tests anywhere and rebuild module
    fixtures per worker; this scheduler hands out work units (:func:`work_unit`), largest count first. An
    explicit ``--dist`` other than ``load`` keeps xdist's own. (Not ``--dist loadgroup``: xdist 3.8 tags the
    group into ``item._nodeid``, which pytest 9.2 no longer reads, so its groups are silently ignored.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)
