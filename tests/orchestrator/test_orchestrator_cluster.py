"""The smoke grid sent to a real Ray cluster through RAY_ADDRESS (a one-node cluster on 127.0.0.1).

The cluster gets its own port, temp dir, HOME (so its auth token and W&B files stay
in the test's directories) and token authentication, as a real cluster would.
It is stopped by terminating only its own processes: ``ray start --block`` runs in
a new session and tears its processes down on SIGTERM; anything of that session
still alive afterwards is killed.  ``ray stop`` is never used: it would end every
Ray process on the machine (another sweep, another test run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orch_helpers import subprocess_env, trial_dirs

from orchestrator import REPO_ROOT

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) != sid:
                continue
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            members.append(int(name))
    return members


def _stop_cluster(head: subprocess.Popen, timeout_s: float = 30.0) -> list[int]:
    """Stop our cluster only; returns the pids that had to be killed."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
    deadline = time.time() + timeout_s
    while time.time() < deadline and _session_members(head.pid):
        time.sleep(0.5)
    killed = _session_members(head.pid)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(timeout=10)
    return killed


def test_smoke_grid_on_a_ray_cluster(tmp_path: Path) -> None:
    # Ray's Unix socket paths live under the temp dir and must stay short (< 108 bytes).
    temp_dir = tempfile.mkdtemp(prefix="bnray-", dir="/tmp")
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = subprocess_env(tmp_path)
    # Without this Ray advertises the machine's external address, not the loopback one.
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token")
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "ray_head.log").open("w")
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--block",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:  # the head is up when its GCS port accepts connections
            assert head.poll() is None, (tmp_path / "ray_head.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the Ray head did not come up in 120 s"
                time.sleep(0.5)
        results = tmp_path / "results"
        driver = subprocess.run(
            [sys.executable, "-m", "orchestrator.sweep", "--grid", "smoke", "--results", str(results), "--no-figures"],
            cwd=REPO_ROOT,
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=400,
        )
        output = driver.stdout + driver.stderr
        assert driver.returncode == 0, output
        assert f"connecting to the Ray cluster at 127.0.0.1:{port}" in output
        assert "2 trials: 2 completed, 0 diverged, 0 failed" in output
        dirs = trial_dirs(results, "smoke")
        assert len(dirs) == 2
        for directory in dirs:
            assert json.loads((directory / "status.json").read_text())["status"] == "completed"
        # the trials ran on the cluster's node: their Ray state lives in the cluster's temp dir
        assert any(Path(temp_dir).glob("session_*/logs/worker-*"))
    finally:
        killed = _stop_cluster(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)  # also removes the `ray_current_cluster` leftover
    assert not _session_members(head.pid), "processes of our cluster survived"
    if killed:
        print(f"note: {len(killed)} cluster processes ignored SIGTERM for 30 s and were killed: {killed}")
