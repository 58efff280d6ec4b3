"""A killed driver leaves nothing behind, and a rerun never touches a Ray cluster it did not start (issue #11).

A real sweep driver (``python -m orchestrator.sweep``, started in its own session and process group) trains
one pack of two tiny trials on the local Ray it starts; once both members are training and have a
checkpoint, the driver alone gets ``kill -9`` (not its process group: Ray's processes share it).  Then
every process of its Ray session must end on its own:

* the pack's worker process, Ray's idle workers and the pack's W&B service within ``WORKER_BOUND_S``;
* everything else (raylet, GCS, dashboard, dashboard agent, runtime env agent, log monitor, autoscaler
  monitor) within ``SESSION_BOUND_S``.

Measured on the 2-core dev machine (another sweep running beside it, 2026-11-26, 3 runs): GCS, raylet,
dashboard, log monitor and autoscaler monitor (the driver's children, started with a parent-death
signal) ended within 0.1 s of the kill; the pack worker and its wandb-core after 1.6-1.8 s, the idle
worker after 2.0-2.3 s; Ray's DashboardAgent and RuntimeEnvAgent (the raylet's children) after
61.5-61.9 s: they see the raylet gone at once, but first try to publish "Raylet is terminated" to the
GCS, which is gone too, with the 60 s timeout that ``ray._private.utils.publish_error_to_driver``
hard-codes (Ray 2.60; ``RAY_gcs_rpc_server_reconnect_timeout_s=5`` does not shorten it).  Hence
SESSION_BOUND_S = 120 s.  A process counts as ended once it exited (a zombie waiting for PID 1 to reap
it has ended).

The session's processes are the driver's process tree (taken just before the kill) plus every process whose
command line or environment mentions the Ray temp dir this test gives the driver (``RAY_TMPDIR``, unique per
run): never another sweep's or test's Ray.  A process found alive past its bound fails the test and is then
killed (only those: they are provably this test's).

The rerun: a ``ray start --head`` cluster is left running in the same Ray temp dir, so its address sits in
``ray_current_cluster`` exactly where a plain ``ray.init()`` would find and join it (a control shows that it
does).  The same sweep command (no ``--address``, no ``RAY_ADDRESS``) then starts its own local Ray, resumes
both members from their checkpoints and finishes, while the other cluster registers no job of it (its GCS
job list still holds only the control's) and is still running after.

The module takes ≈ 2 min (most of it the agents' minute and the rerun): ``faults_slow``, ``make test-faults``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import store
from orchestrator import REPO_ROOT
from orchestrator.grid import load_grid
from tests.orchestrator.orch_helpers import TINY_BASE

pytestmark = pytest.mark.faults_slow

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_BOUND_S = 15.0  # the pack's worker process, Ray's idle workers, the pack's W&B service
SESSION_BOUND_S = 120.0  # every other process of the killed driver's Ray session
FRAMES = 6000  # per member: still training when killed (after its first checkpoint at 1000 frames)

# The smallest trial that checkpoints, logs and evaluates.
GRID: dict[str, Any] = {
    "name": "killed",
    "base": TINY_BASE,
    "axes": {"bn_mode": ["TTTTT", "TTETT"]},
    "tasks": ["cartpole_swingup"],
    "seeds": [1],
    "frames": FRAMES,
    "resources": {"cpu": 1},
    "max_failures": 0,
    "pack": 2,
}


# ---------------------------------------------------------------------- processes (Linux /proc)
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) of ``pid``; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _read(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kind(command: str) -> str:
    """What a process of a Ray session is, from its command line."""
    for needle, name in (
        ("wandb-core", "wandb-core"),
        ("DashboardAgent", "dashboard agent"),
        ("dashboard/agent.py", "dashboard agent"),
        ("RuntimeEnvAgent", "runtime env agent"),
        ("runtime_env/agent", "runtime env agent"),
        ("gcs_server", "gcs_server"),
        ("log_monitor.py", "log monitor"),
        ("dashboard.py", "dashboard"),
        ("autoscaler/_private/monitor.py", "autoscaler monitor"),
        ("ImplicitFunc", "pack worker"),
        ("/raylet/raylet", "raylet"),
        ("default_worker.py", "ray worker"),
        ("ray::", "ray worker"),
        ("orchestrator.sweep", "driver"),
    ):
        if needle in command:
            return name
    return "other"


WORKER_KINDS = {"pack worker", "ray worker", "wandb-core"}


def session_processes(driver_pid: int | None, marker: str) -> dict[tuple[int, int], str]:
    """(pid, start time) -> command line of the live descendants of ``driver_pid`` and of every live process
    whose command line or environment mentions ``marker``."""
    stats = {int(n): st for n in os.listdir("/proc") if n.isdigit() and (st := _stat(int(n))) is not None}
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    picked: set[int] = set()
    stack = list(children.get(driver_pid, [])) if driver_pid is not None else []
    while stack:
        pid = stack.pop()
        if pid not in picked:
            picked.add(pid)
            stack += children.get(pid, [])
    picked |= {pid for pid in stats if marker in _read(pid, "cmdline") or marker in _read(pid, "environ")}
    picked -= {os.getpid(), driver_pid}
    return {(pid, stats[pid][2]): _read(pid, "cmdline").strip()[:160] for pid in picked if stats[pid][0] != "Z"}


def alive(key: tuple[int, int]) -> bool:
    """Is this very process (pid and start time) still running (a zombie has ended)?"""
    st = _stat(key[0])
    return st is not None and st[2] == key[1] and st[0] != "Z"


def kill_leftovers(keys: Iterator[tuple[int, int]]) -> None:
    """SIGKILL the given processes that are still alive (each checked to be the very process seen before)."""
    for key in keys:
        if alive(key):
            try:
                os.kill(key[0], signal.SIGKILL)
            except OSError:
                pass


# ---------------------------------------------------------------------- helpers
def _env(root: Path, ray_tmp: str) -> dict[str, str]:
    """A driver's environment: offline W&B under ``root``, Ray's temp dir ``ray_tmp``, no RAY_ADDRESS."""
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(root / "wandb_dir"), RAY_TMPDIR=ray_tmp)
    for key, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        (root / "wandb_home" / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(root / "wandb_home" / sub)
    (root / "wandb_dir").mkdir(exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for key in ("RAY_ADDRESS", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_TAGS", "WANDB_DISABLED"):
        env.pop(key, None)
    return env


def _sweep_command(grid_path: Path, results: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestrator.sweep",
        "--grid",
        str(grid_path),
        "--results",
        str(results),
        "--no-figures",
        "--progress-every",
        "5",
    ]


def _status(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _metric_frames(directory: Path) -> list[int]:
    try:
        with (directory / "metrics.csv").open(newline="") as handle:
            return [int(row["frame"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _registered_jobs(session: Path) -> list[str]:
    """The driver pids of the jobs the GCS of a Ray session registered (its job list, from its log)."""
    try:
        text = (session / "logs" / "gcs_server.out").read_text(errors="replace")
    except OSError:
        return []
    return re.findall(r"Registering job\. job_id=\S+ driver_pid=(\d+)", text)


def _session_dirs(ray_tmp: str) -> set[Path]:
    return set((Path(ray_tmp) / "ray").glob("session_2*"))


# ---------------------------------------------------------------------- the kill
@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the driver, kill -9 it while its pack trains, watch its session end; yields what was seen."""
    root = tmp_path_factory.mktemp("killed")
    # Ray's Unix socket paths live under its temp dir and must stay short (< 108 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="bnkill-", dir="/tmp")
    grid_path = root / "killed.yaml"
    grid_path.write_text(yaml.safe_dump(GRID, sort_keys=False))
    results = root / "results"
    members = [store.trial_dir(results, "killed", t.trial_id) for t in load_grid(str(grid_path), "local").trials]
    env = _env(root, ray_tmp)
    seen: dict[tuple[int, int], str] = {}
    log_path = root / "driver.log"
    try:
        with log_path.open("w") as log:
            driver = subprocess.Popen(
                _sweep_command(grid_path, results),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + 300
        while True:  # every member training, with a metrics row and a checkpoint to resume from
            ready = all(
                _status(d).get("status") == "running" and _metric_frames(d) and store.resume_frame(d) >= 1000
                for d in members
            )
            if ready:
                break
            assert driver.poll() is None, f"the driver ended early:\n{log_path.read_text()}"
            assert time.time() < deadline, f"the pack did not checkpoint within 300 s:\n{log_path.read_text()}"
            time.sleep(0.2)
        seen = session_processes(driver.pid, ray_tmp)
        frames_at_kill = {d.name: max(_metric_frames(d)) for d in members}
        # kill -9 of the driver only (its Ray processes share its process group: killpg would hit them too)
        os.kill(driver.pid, signal.SIGKILL)
        killed_at = time.time()
        driver.wait(timeout=10)
        ended: dict[tuple[int, int], float] = {}
        while time.time() - killed_at < SESSION_BOUND_S + 5:
            for key, command in session_processes(driver.pid, ray_tmp).items():
                seen.setdefault(key, command)  # anything the session spawned after the snapshot
            for key in seen:
                if key not in ended and not alive(key):
                    ended[key] = time.time() - killed_at
            if len(ended) == len(seen):
                break
            time.sleep(0.2)
        yield {
            "root": root,
            "ray_tmp": ray_tmp,
            "grid_path": grid_path,
            "results": results,
            "members": members,
            "seen": seen,
            "ended": ended,
            "frames_at_kill": frames_at_kill,
            "log": log_path.read_text(),
            "env": env,
        }
    finally:
        kill_leftovers(iter(list(seen) + list(session_processes(None, ray_tmp))))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_killed_driver_leaves_no_process_behind(killed: dict[str, Any]) -> None:
    seen, ended = killed["seen"], killed["ended"]
    kinds = {key: kind(command) for key, command in seen.items()}
    report = "\n".join(
        f"  {kinds[key]:20} pid {key[0]:>7}: "
        + (f"ended after {ended[key]:5.1f} s" if key in ended else "STILL ALIVE")
        + f"  {seen[key][:100]}"
        for key in sorted(seen, key=lambda k: ended.get(k, 1e9))
    )
    print(
        f"\nprocesses of the killed driver's Ray session (last metrics row of each member at the kill: "
        f"{killed['frames_at_kill']}):\n{report}"
    )
    # the session really was there: the pack's worker, its W&B service and Ray's own processes
    assert {"pack worker", "wandb-core", "raylet", "gcs_server"} <= set(kinds.values()), report
    for key, what in kinds.items():
        bound = WORKER_BOUND_S if what in WORKER_KINDS else SESSION_BOUND_S
        assert key in ended and ended[key] <= bound, f"{what} (pid {key[0]}) outlived {bound:g} s:\n{report}"
    # the members were interrupted mid-training: their store entries say so, with checkpoints to resume from
    for directory in killed["members"]:
        assert _status(directory)["status"] == "running"
        assert 1000 <= store.resume_frame(directory) < FRAMES


def test_a_rerun_resumes_on_its_own_ray_and_never_joins_another(killed: dict[str, Any]) -> None:
    root, ray_tmp, env = killed["root"], killed["ray_tmp"], killed["env"]
    port = _free_port()
    cluster_dir = Path(ray_tmp) / "ray"
    before = _session_dirs(ray_tmp)
    head_log = (root / "ray_head.log").open("w")
    # its own HOME: no auth token or other Ray state of the user's; a loopback node as in the cluster test
    (root / "home").mkdir(exist_ok=True)
    cluster_env = {**env, "HOME": str(root / "home"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # a cluster left running on this machine, in the very temp dir the rerun's Ray uses
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={cluster_dir}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--block",
        ],
        env=cluster_env,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        address_file = cluster_dir / "ray_current_cluster"
        while True:  # the head is up when its GCS port accepts connections and it has recorded its address
            assert head.poll() is None, (root / "ray_head.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if address_file.exists() and address_file.read_text().strip().endswith(f":{port}"):
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(0.5)
        # control: the trap is armed, a plain ray.init() in this temp dir joins that cluster
        control = subprocess.run(
            [sys.executable, "-c", "import ray; ray.init(); print('GCS', ray.get_runtime_context().gcs_address)"],
            env=cluster_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert f"GCS 127.0.0.1:{port}" in control.stdout, control.stdout + control.stderr
        (head_session,) = _session_dirs(ray_tmp) - before
        deadline = time.time() + 30
        while len(jobs_on_head := _registered_jobs(head_session)) < 1:  # the control's job, once the GCS logs it
            assert time.time() < deadline, "the control driver's job never showed in the cluster's GCS log"
            time.sleep(0.5)
        assert len(jobs_on_head) == 1, jobs_on_head

        rerun = subprocess.Popen(
            _sweep_command(killed["grid_path"], killed["results"]),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = rerun.communicate(timeout=400)
        finally:
            if rerun.poll() is None:
                rerun.kill()
                output, _ = rerun.communicate()
        assert rerun.returncode == 0, output
        assert "connecting to the Ray cluster" not in output
        assert "2 trials: 2 completed, 0 diverged, 0 failed" in output, output
        for directory in killed["members"]:
            status = _status(directory)
            assert status["status"] == "completed" and status["resumed_from_frame"] >= 1000, status
            frames = _metric_frames(directory)
            assert frames == sorted(frames) and frames[-1] == FRAMES
        # the rerun started a Ray session of its own (Ray names a session after the pid that started it) ...
        own = [s for s in _session_dirs(ray_tmp) - before if s.name.endswith(f"_{rerun.pid}")]
        assert len(own) == 1 and any(own[0].glob("logs/worker-*")), sorted(_session_dirs(ray_tmp))
        # ... and the other cluster registered no job besides the control's: its job list is unchanged; it is still up
        assert _registered_jobs(head_session) == jobs_on_head
        assert not any(head_session.glob(f"logs/python-core-driver-*_{rerun.pid}.log"))
        assert head.poll() is None
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        ours = session_processes(head.pid, ray_tmp)  # the cluster's and anything else under our Ray temp dir
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(k) for k in ours):
            time.sleep(0.5)
        kill_leftovers(iter(list(ours)))
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=10)
        head_log.close()
