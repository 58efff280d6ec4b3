"""The ``bnsweep`` command line (orchestrator/cli.py) and the constraints file that pins its install."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import REPO_ROOT
from orchestrator.cli import COMMANDS, main

FOUR = ("train", "sweep", "figures", "bench")
# A line of each command's own help: proof that `bnsweep COMMAND --help` is the underlying main's.
OWN_HELP = {"train": "bn_mode", "sweep": "--dry-run", "figures": "--dpi", "bench": "--quick", "claims": "claims table"}


def _run(
    *args: str,
    command: tuple[str, ...] = (sys.executable, "-m", "orchestrator.cli"),
    cwd: Path = REPO_ROOT,
    checkout_on_path: bool = True,
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if checkout_on_path:
        env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _assert_overview(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bnsweep")
    listed = re.findall(r"^    (\w+)\s", done.stdout, flags=re.M)
    assert set(FOUR) <= set(listed) and listed == list(COMMANDS)


def test_help_lists_the_subcommands_without_importing_torch_or_ray() -> None:
    _assert_overview(_run("--help"))
    probe = (
        "import sys; from orchestrator.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = sorted({'torch', 'ray', 'pandas', 'agent', 'analysis'} & set(sys.modules))\n"
        "print('HEAVY', heavy)"
    )
    done = _run(command=(sys.executable, "-c", probe))
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


def test_the_installed_console_script_when_this_checkout_is_installed() -> None:
    script = Path(sys.executable).parent / "bnsweep"
    if not script.exists():
        pytest.skip(f"{script} not installed (make install creates it)")
    # The .venv may hold another checkout's editable install (a worktree's `make install`): test only this one's.
    probe = _run(
        command=(sys.executable, "-c", "import orchestrator.cli as m; print(m.__file__)"),
        cwd=Path("/"),
        checkout_on_path=False,
    )
    if Path(probe.stdout.strip() or "/").resolve() != REPO_ROOT / "orchestrator" / "cli.py":
        pytest.skip(f"the installed bnsweep is another checkout's ({probe.stdout.strip() or probe.stderr.strip()})")
    _assert_overview(_run("--help", command=(str(script),), cwd=Path("/"), checkout_on_path=False))
    # outside the checkout, every command's module comes from the install (bench too)
    done = _run("bench", "--help", command=(str(script),), cwd=Path("/"), checkout_on_path=False)
    assert done.returncode == 0 and "usage: bnsweep bench" in done.stdout, done.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_help_is_the_underlying_help(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        code = main([name, "--help"])
        raise SystemExit(code)  # train's main returns 0 after its help; argparse mains exit
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bnsweep {name}") and OWN_HELP[name] in out


def test_subcommand_usage_names_bnsweep_and_the_module_run_alone_names_itself() -> None:
    done = _run("sweep", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: bnsweep sweep"), done.stdout + done.stderr
    done = _run("sweep", "--pack", "0")  # an argparse error line names the program too
    assert done.returncode == 2 and "bnsweep sweep: error:" in done.stderr, done.stderr
    done = _run("--help", command=(sys.executable, "-m", "orchestrator.sweep"))
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m orchestrator.sweep"), done.stderr


def test_an_unknown_subcommand_exits_2_and_names_the_choices() -> None:
    done = _run("trian", "--x")
    assert done.returncode == 2 and not done.stdout
    assert "bnsweep: error: unknown command 'trian': expected one of train, sweep, figures, bench" in done.stderr
    done = _run()
    assert done.returncode == 2 and "a command is required" in done.stderr


def test_exit_codes_and_arguments_pass_through(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "not_a_key_value"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["sweep", "--grid", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    with pytest.raises(SystemExit) as exit_info:  # the sweep parser's own error
        main(["sweep", "--pack", "0"])
    assert exit_info.value.code == 2


def test_sweep_dry_run_prints_the_plan(tmp_path: Path) -> None:
    """End to end in a process of its own, as `make sweep DRY_RUN=1` runs it: exit 0, the plan, nothing run."""
    results = tmp_path / "results"
    done = _run(
        "sweep", "--grid", "smoke", "--dry-run", "--results", str(results), "--figures", str(tmp_path / "figures")
    )
    assert done.returncode == 0, done.stderr
    assert "grid smoke" in done.stdout and "2 trials" in done.stdout and "dry run: nothing launched" in done.stdout
    assert not results.exists()


def test_every_command_module_is_in_the_installed_packages() -> None:
    """The console script runs without the checkout on sys.path: setup.cfg must install each command's package."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    assert "bnsweep = orchestrator.cli:main" in cfg["options.entry_points"]["console_scripts"]
    included = [p.strip().rstrip("*") for p in cfg["options.packages.find"]["include"].split(",")]
    for module, _ in COMMANDS.values():
        assert module.split(".")[0] in included, module


# ------------------------------------------------------------------ constraints
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.!]*)$")  # name==version, no local label


def _pins() -> dict[str, str]:
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    assert lines[0].startswith("#") and "make constraints" in lines[0]
    pins: dict[str, str] = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: {line!r} is not name==version"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert name not in pins, f"constraints.txt: {name} twice"
        pins[name] = match.group(2)
    return pins


def test_constraints_are_name_version_pins_matching_the_makefile_and_setup_cfg() -> None:
    pins = _pins()
    assert "bnsweep" not in pins  # the editable install itself is never pinned
    makefile = (REPO_ROOT / "Makefile").read_text()
    setup_cfg = (REPO_ROOT / "setup.cfg").read_text()
    for name, variable in (("torch", "TORCH_VERSION"), ("mujoco", "MUJOCO_VERSION")):
        version = re.search(rf"^{variable} := (\S+)$", makefile, flags=re.M).group(1)
        assert pins[name] == version, f"constraints.txt pins {name}=={pins[name]}, the Makefile {version}"
        assert f"{name}=={version}" in setup_cfg
    for required in ("numpy", "ray", "wandb", "dm-control", "gymnasium", "pytest", "ruff", "mypy", "pip"):
        assert required in pins
