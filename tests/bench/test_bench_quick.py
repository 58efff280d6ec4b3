"""`make bench ARGS=--quick` runs every measurement end to end and writes a complete report."""

from __future__ import annotations

import json

import pytest
import torch

from bench.goals import GOALS
from bench.run import main

EXPECTED = (
    "pixel_update_ms",
    "reference_pixel_update_ms",
    "pixel_update_speedup_vs_reference",
    "pixel_fps",
    "reference_pixel_fps",
    "pixel_fps_speedup_vs_reference",
    "state_fps",
    "state_update_ms",
    "env_step_ms",
    "render_ms",
    "loop_overhead_pct",
    "replay_bytes_per_transition_pixels",
    "replay_bytes_per_transition_states",
    "concurrency_speedup",
    "states_k2_in_process_fps",
    "states_k2_workers_fps",
    "states_k2_workers_vs_in_process",
    "states_k2_workers_cycle_ms",
    "states_k2_workers_update_ms",
    "states_k2_workers_env_step_p50_ms",
    "tensor_ops_per_update_k1",
    "tensor_ops_per_update_k16",
)


def test_quick_bench_writes_every_metric(tmp_path, capsys):
    out = tmp_path / "latest.json"
    assert main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    for name in EXPECTED:
        assert results[name] > 0, name
    assert report["quick"] is True and report["device"] == "cpu" and report["machine"]["torch"].startswith("2.13")
    assert report["machine"]["cpu_family_model"] and report["machine"]["cores"] >= 1
    # Every goal whose section ran has a verdict (the quick run leaves out --packed and --baseline REV).
    assert set(report["goals"]) == {name for name in GOALS if name in results}
    assert "pixel_update_ms" in report["goals"]
    assert 0.0 <= results["states_k2_workers_overlap_fraction"] <= 1.0
    assert 0.0 <= results["states_k2_workers_unaccounted_pct"] < 100.0
    # Members sharing a learning rate step whole tensors: fewer operations than a slice per member.
    assert results["tensor_ops_per_update_k16"] < results["tensor_ops_per_update_k16_per_member_slices"]
    # The replay stores each pixel frame once: one 84x84x3 frame plus small fields.
    assert 84 * 84 * 3 < results["replay_bytes_per_transition_pixels"] < 84 * 84 * 3 + 100
    assert "pixel_update_ms" in capsys.readouterr().out


def test_gpu_script_runs_in_miniature_on_cpu(tmp_path):
    """``python -m bench.packed`` (the prepared GPU run) checked on CPU before a GPU session: it writes its JSON
    with frames/s, memory and the per-cycle timeline of a pack in worker processes."""
    from bench.packed import main as packed_main

    out = tmp_path / "gpu.json"
    args = ["--out", str(out), "--device", "cpu", "--quick", "--seed-frames", "100", "--frames", "40"]
    assert packed_main([*args, "--only", "gpu_pixels_k1_lz4"]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["gpu_pixels_k1_lz4_fps"] > 0 and results["gpu_pixels_k1_lz4_pss_mib"] > 0
    assert results["gpu_pixels_k1_lz4_timeline"]["cycle_ms"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: --device cuda is valid here")
def test_cuda_bench_without_cuda_stops_with_a_clear_error(tmp_path, capsys):
    out = tmp_path / "latest.json"
    assert main(["--quick", "--device", "cuda", "--out", str(out)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()
