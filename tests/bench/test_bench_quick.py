"""`make bench ARGS=--quick` runs every measurement end to end and writes a complete report."""

from __future__ import annotations

import json

import pytest
import torch

from bench.run import GOALS, main

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
    "replay_lz4_worst_ratio",
    "replay_lz4_sample_pct_of_pixel_update",
    "states_h256_k2_pack_fps",
    "states_h256_k2_processes_fps",
    "states_h256_k2_pack_pss_mib",
    "states_h256_k2_processes_pss_mib",
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
    # Every goal whose section ran has a verdict (the quick run leaves out K = 8 and --baseline REV).
    assert set(report["goals"]) == {name for name in GOALS if name in results}
    assert {"pixel_update_ms", "replay_lz4_worst_ratio", "replay_lz4_sample_pct_of_pixel_update"} <= set(
        report["goals"]
    )
    assert results["replay_lz4_worst_ratio"] < 1.0  # the compressed store holds less than raw frames
    # The replay stores each pixel frame once: one 84x84x3 frame plus small fields.
    assert 84 * 84 * 3 < results["replay_bytes_per_transition_pixels"] < 84 * 84 * 3 + 100
    assert "pixel_update_ms" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: --device cuda is valid here")
def test_cuda_bench_without_cuda_stops_with_a_clear_error(tmp_path, capsys):
    out = tmp_path / "latest.json"
    assert main(["--quick", "--device", "cuda", "--out", str(out)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()
