"""Run one trial: ``python -m agent.train key=value ... out=DIR``.

``run_trial(config, out_dir, sinks)`` is the function the orchestrator calls;
the command line is a thin edge around it.  The trial directory gets
``config.yaml`` (fully resolved), ``metrics.csv`` (one row per log point),
``status.json`` and ``checkpoint/`` (resumed from automatically).
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agent import metrics as m
from agent.allocator import keep_freed_memory
from agent.config import ConfigError, TrialConfig, build_config, help_text
from agent.drqv2 import Diverged, DrQV2Agent
from agent.replay import ReplayBuffer
from agent.sinks import CHECKPOINT_DIR, DiskSink, MetricSink, read_status, write_config, write_status
from envs import make_env

CHECKPOINT_FILE = "state.pt"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Trainer:
    """The DrQ-v2 interaction loop (DrQ-v2's train.py, without Hydra or per-episode files)."""

    def __init__(self, config: TrialConfig, out_dir: Path, sinks: Sequence[MetricSink]):
        self.config = config
        self.out_dir = out_dir
        self.sinks = sinks
        c = config
        if c.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={c.device!r}: CUDA is not available on this machine; use device=cpu")
        self.device = torch.device(c.device)
        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.env = make_env(c.task, c.obs_type, c.seed, c.action_repeat, c.frame_stack)
        self.eval_env = make_env(c.task, c.obs_type, c.seed + 100_000, c.action_repeat, c.frame_stack)
        self.agent = DrQV2Agent(c, self.env.obs_shape, self.env.action_dim, self.device)
        agent_steps = math.ceil(c.num_frames / c.action_repeat)
        # Never allocate more slots than the trial can fill: 1M pixel slots are 21 GB.
        capacity = min(c.replay_capacity, agent_steps + 2 * c.frame_stack + 2)
        frame_dtype = np.uint8 if c.obs_type == "pixels" else np.float32
        self.replay = ReplayBuffer(capacity, self.env.frame_shape, frame_dtype, self.env.frame_stack,
                                   self.env.action_dim, c.nstep, c.discount, seed=c.seed)
        projection = m.projection_matrix(c.task, self.env.state_dim + self.env.action_dim, c.coverage_dims)
        self.coverage = m.Coverage(projection, c.coverage_cell_size)
        self.step = 0  # agent steps; frames = step * action_repeat
        self.episodes = 0
        self.next_log_frame = c.log_every_frames
        self.next_eval_frame = 0
        self.next_checkpoint_frame = c.checkpoint_every_frames or math.inf
        self.pending: dict[str, list[float]] = defaultdict(list)  # metrics since the last log row
        self.interval_start = (time.perf_counter(), 0)  # (time, frame) at the last log row

    @property
    def frame(self) -> int:
        return self.step * self.config.action_repeat

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        c = self.config
        time_step = self.env.reset()
        self.replay.add(time_step.frame, None, 0.0, 1.0, True, False)
        episode_return, episode_length = 0.0, 0
        while self.frame < c.num_frames:
            if time_step.last:
                if self.frame >= self.next_checkpoint_frame:
                    self.save_checkpoint()
                time_step = self.env.reset()
                self.replay.add(time_step.frame, None, 0.0, 1.0, True, False)
                episode_return, episode_length = 0.0, 0
            if c.eval_every_frames and self.frame >= self.next_eval_frame:
                self.evaluate()
                self.next_eval_frame += c.eval_every_frames
            action = self.agent.act(time_step.obs, self.step, eval_mode=False)
            if self.frame >= c.num_seed_frames and self.step % c.update_every_steps == 0:
                self.learn()
            self.coverage.add(time_step.state, action)
            time_step = self.env.step(action)
            self.replay.add(time_step.frame, action, time_step.reward, time_step.discount, False, time_step.last)
            episode_return += time_step.reward
            episode_length += 1
            self.step += 1
            if time_step.last:
                self.episodes += 1
                self.pending[m.TRAIN_RETURN].append(episode_return)
                self.pending[m.TRAIN_LENGTH].append(episode_length * c.action_repeat)  # in frames
            if self.frame >= self.next_log_frame:
                self.log_training()
                self.next_log_frame += c.log_every_frames
        if self.pending:
            self.log_training()
        if c.eval_every_frames:
            self.evaluate()  # the final evaluation, at num_frames

    def learn(self) -> None:
        try:
            batch = self.replay.sample(self.config.replay_rows_per_update)
        except RuntimeError:
            return  # no complete n-step transition yet (only with tiny seed phases)
        for key, value in self.agent.update(batch, self.step).items():
            self.pending[key].append(value)

    def log_training(self) -> None:
        now, frame = time.perf_counter(), self.frame
        row = {key: float(np.mean(values)) for key, values in self.pending.items() if values}
        row[m.COVERAGE] = float(len(self.coverage))
        elapsed = now - self.interval_start[0]
        if elapsed > 0 and frame > self.interval_start[1]:
            row[m.FPS] = (frame - self.interval_start[1]) / elapsed
        self.emit(frame, row)
        self.pending.clear()
        self.interval_start = (time.perf_counter(), frame)

    def emit(self, frame: int, row: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.log(frame, row)

    @torch.no_grad()
    def evaluate(self) -> None:
        """Deterministic episodes; their first q_bias_max_states states also give the Q-bias (SPEC §7)."""
        c = self.config
        start = time.perf_counter()
        returns, q_obs, q_actions, mc_returns = [], [], [], []
        kept = 0
        for _ in range(c.num_eval_episodes):
            time_step = self.eval_env.reset()
            rewards, total = [], 0.0
            while not time_step.last:
                action = self.agent.act(time_step.obs, self.step, eval_mode=True)
                if kept < c.q_bias_max_states:
                    q_obs.append(time_step.obs)
                    q_actions.append(action)
                    kept += 1
                time_step = self.eval_env.step(action)
                rewards.append(time_step.reward)
                total += time_step.reward
            returns.append(total)
            needed = len(q_obs) - len(mc_returns)
            if needed:
                mc_returns.extend(m.discounted_returns(np.asarray(rewards), c.discount)[:needed])
        row = {m.EVAL_RETURN: float(np.mean(returns))} if returns else {}
        if q_obs:
            q_values = self.agent.q_values(np.stack(q_obs), np.stack(q_actions))
            row[m.Q_BIAS_MEAN], row[m.Q_BIAS_STD] = m.q_bias(q_values, np.asarray(mc_returns))
        row[m.COVERAGE] = float(len(self.coverage))
        self.emit(self.frame, row)
        # Evaluation time is not training time: keep it out of perf/fps.
        self.interval_start = (self.interval_start[0] + time.perf_counter() - start, self.interval_start[1])

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Written at an episode end, so resuming starts with a reset exactly as the uninterrupted run."""
        c = self.config
        state = {
            "frame": self.frame, "step": self.step, "episodes": self.episodes,
            "next_log_frame": self.next_log_frame, "next_eval_frame": self.next_eval_frame,
            "next_checkpoint_frame": self.next_checkpoint_frame + c.checkpoint_every_frames,
            "pending": dict(self.pending), "agent": self.agent.state_dict(),
            "coverage": self.coverage.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "replay": self.replay.rng.bit_generator.state, "env": self.env.get_rng_state(),
                    "eval_env": self.eval_env.get_rng_state()},
            "replay": self.replay.state_dict() if c.checkpoint_replay else None,
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        final = self.out_dir / CHECKPOINT_DIR
        tmp = self.out_dir / (CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / CHECKPOINT_FILE)
        old = self.out_dir / (CHECKPOINT_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)  # the previous checkpoint stays until the new one is complete
        shutil.rmtree(old, ignore_errors=True)
        self.next_checkpoint_frame = state["next_checkpoint_frame"]
        for sink in self.sinks:
            sink.checkpoint(self.frame, final)

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        self.step, self.episodes = state["step"], state["episodes"]
        self.next_log_frame, self.next_eval_frame = state["next_log_frame"], state["next_eval_frame"]
        self.next_checkpoint_frame = state["next_checkpoint_frame"]
        self.pending = defaultdict(list, state["pending"])
        self.agent.load_state_dict(state["agent"])
        self.coverage.load_state_dict(state["coverage"])
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.replay.rng.bit_generator.state = rng["replay"]
        self.env.set_rng_state(rng["env"])
        self.eval_env.set_rng_state(rng["eval_env"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def load_checkpoint_state(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def run_trial(config: TrialConfig, out_dir: Path | str, sinks: Sequence[MetricSink] = (),
              on_status: Callable[[Mapping[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one trial into ``out_dir`` (resuming from its checkpoint if there is one) and return its status.

    Never raises for a trial that diverges or crashes: that is recorded in
    ``status.json`` (``diverged``/``failed``) with every metric logged so far kept.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    keep_freed_memory()  # process-wide; without it every pixel update runs on freshly faulted pages
    write_config(out_dir, config.to_dict())
    checkpoint = load_checkpoint_state(out_dir)
    previous = read_status(out_dir) or {}
    wall_before = float(previous.get("wall_time_s", 0.0)) if checkpoint else 0.0
    started = time.perf_counter()
    status: dict[str, Any] = {"status": "running", "frame": checkpoint["frame"] if checkpoint else 0,
                              "num_frames": config.num_frames, "wall_time_s": wall_before,
                              "started_at": _now(), "resumed_from_frame": checkpoint["frame"] if checkpoint else None}
    write_status(out_dir, status)
    disk = DiskSink(out_dir, resume_frame=checkpoint["frame"] if checkpoint else None)
    all_sinks: list[MetricSink] = [disk, *sinks]
    trainer = None
    try:
        trainer = Trainer(config, out_dir, all_sinks)
        if checkpoint:
            trainer.load_checkpoint(checkpoint)
        trainer.run()
        status["status"] = "completed"
    except Diverged as err:
        status.update(status="diverged", error=str(err))
    except KeyboardInterrupt:
        status.update(status="failed", error="interrupted")
        raise
    except Exception as err:  # a crashed trial is a result too; the sweep goes on
        status.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    finally:
        if trainer is not None:
            status["frame"] = trainer.frame
            trainer.close()
        status["wall_time_s"] = wall_before + time.perf_counter() - started
        status["finished_at"] = _now()
        write_status(out_dir, status)
        for sink in all_sinks:
            try:
                sink.close(status)
            except Exception as err:  # a broken view (W&B) never costs the disk results
                print(f"warning: sink {type(sink).__name__} failed to close: {err}", file=sys.stderr)
        if on_status:
            on_status(status)
    return status


def parse_cli(argv: Sequence[str]) -> tuple[dict[str, Any], Path | None]:
    overrides: dict[str, Any] = {}
    out: Path | None = None
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected key=value (see --help)")
        key, value = arg.split("=", 1)
        if key == "out":
            out = Path(value)
        elif key == "config":
            loaded = yaml.safe_load(Path(value).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"config={value}: expected a mapping of config keys")
            overrides.update(loaded)
        else:
            overrides[key] = yaml.safe_load(value) if value else value
    return overrides, out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m agent.train [key=value ...] [config=overrides.yaml] [out=DIR]\n")
        print("  out = runs/<task>-<obs_type>-seed<seed>   trial directory (resumes from its checkpoint)\n")
        print(help_text())
        return 0
    try:
        overrides, out = parse_cli(argv)
        config = build_config(overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = out or Path("runs") / f"{config.task}-{config.obs_type}-seed{config.seed}"
    status = run_trial(config, out)
    print(f"{status['status']}: {status['frame']} frames in {status['wall_time_s']:.0f} s -> {out}")
    if status["status"] == "failed":
        print(status.get("traceback", status.get("error", "")), file=sys.stderr)
    return 0 if status["status"] in ("completed", "diverged") else 1


if __name__ == "__main__":
    sys.exit(main())
