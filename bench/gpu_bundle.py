"""The Python packages the lent GPU machine lacks, as one zip that travels with a device call (issue #17).

    .venv/bin/python -m bench.gpu_bundle          # writes .gpu/site.zip (git-ignored), prints its size

The GPU machine has Python 3.12, PyTorch, numpy, pandas, pyarrow, matplotlib, pyyaml and scipy, but no package
registry, and a device call carries at most 64 MiB. This downloads the cp312 wheels of what the worker, the
benchmark and the Ray-free runner import beyond that (measured by importing them here: MuJoCo and dm_control,
PyOpenGL for EGL rendering, lz4, pydantic), unpacks them and leaves out what no DMC task needs (dm_control's
locomotion assets and the dog model, MuJoCo's experimental and Filament renderers, Windows DLLs), then zips the
rest. On the machine: ``unzip -q .gpu/site.zip -d /tmp/site`` and ``PYTHONPATH=/tmp/site:.`` (bench/gpu_session.sh).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".gpu" / "site.zip"
# The versions of constraints.txt (mujoco as the Makefile pins it); no dependencies resolved: the list is complete.
PACKAGES = (
    "mujoco==3.17.0",
    "dm_control==1.0.50",
    "dm-env==1.6",
    "absl-py",
    "PyOpenGL==3.1.10",
    "lxml",
    "lz4==4.4.5",
    "pydantic==2.14.4",
    "pydantic_core",
    "annotated_types",
    "typing-inspection==0.4.5",
    "typing_extensions",
    "tqdm",
)
PRUNE = (
    "dm_control/locomotion",
    "dm_control/suite/dog_assets",
    "dm_control/blender",
    "mujoco/experimental",
    "mujoco/_render_filament.cpython-312-x86_64-linux-gnu.so",
    "OpenGL/DLLS",
)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def pinned(name: str) -> str:
    """``name`` at the version constraints.txt pins, when it pins one."""
    if "==" in name:
        return name
    key = name.lower().replace("_", "-")
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.lower().replace("_", "-").startswith(f"{key}=="):
            return line.strip()
    return name


def build(out: Path = OUT) -> int:
    with tempfile.TemporaryDirectory() as work:
        wheels, site = Path(work) / "wheels", Path(work) / "site"
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
            + ["--python-version", "3.12", *platforms, "-d", str(wheels), *map(pinned, PACKAGES)],
            check=True,
        )
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        for relative in PRUNE:
            target = site / relative
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(site.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(site))
    size = out.stat().st_size
    print(f"{out}: {size / 2**20:.1f} MiB ({len(PACKAGES)} packages)")
    return size


if __name__ == "__main__":
    build()
