"""Fixtures for the orchestrator tests (helpers live in orch_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from orch_helpers import wandb_env


@pytest.fixture
def isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B offline, writing under tmp_path only: never the network, never the user's W&B files."""
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    for key in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_TAGS", "WANDB_DISABLED"):
        monkeypatch.delenv(key, raising=False)
    return wandb_dir


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray instance for a whole test module (start-up costs seconds); sweeps reuse it."""
    import ray

    from orchestrator.trainable import worker_env

    with pytest.MonkeyPatch.context() as patch:
        for key, value in wandb_env(tmp_path_factory.mktemp("wandb_home")).items():
            patch.setenv(key, value)
        patch.setenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024 * 1024,
            runtime_env={"env_vars": worker_env()},
        )
        try:
            yield
        finally:
            ray.shutdown()
