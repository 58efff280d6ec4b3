"""The encoder flattens its output in (H, W, C) order; (C, H, W)-order checkpoints, once upgraded, resume exactly."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agent import checkpoint
from agent.drqv2 import FEATURE_ORDER, DrQV2Agent
from agent.networks import Encoder, group_pixels

OBS_SHAPE = (9, 24, 24)


def test_features_are_flattened_in_hwc_order_in_both_memory_formats():
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    nchw, nhwc = Encoder(2, OBS_SHAPE, channels_last=False), Encoder(2, OBS_SHAPE, channels_last=True)
    nchw.reset_parameters(generators)
    nhwc.load_state_dict(nchw.state_dict())
    obs = torch.randint(0, 256, (2, 4, *OBS_SHAPE), dtype=torch.uint8)
    for k in range(2):  # each member on its own, with plain convolutions of its weights
        x = obs[k].float() / 255.0 - 0.5
        for i, stride in zip(range(0, 8, 2), (2, 1, 1, 1)):
            x = F.conv2d(x, nchw.convnet[i].weight[k], nchw.convnet[i].bias[k], stride=stride).relu()
        expected = x.permute(0, 2, 3, 1).reshape(4, -1)  # (n, H*W*C)
        torch.testing.assert_close(nchw(group_pixels(obs, False))[k], expected)
        torch.testing.assert_close(nhwc(group_pixels(obs, True))[k], expected)


def _to_chw(weight: torch.Tensor, chw: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = chw
    return weight.reshape(weight.shape[0], h, w, c).permute(0, 3, 1, 2).reshape(weight.shape[0], -1)


def test_chw_order_checkpoint_loads_as_the_same_function(tiny_config):
    config = tiny_config(obs_type="pixels", critic_norm="batch_norm", actor_norm="batch_norm")
    agent = DrQV2Agent(config, OBS_SHAPE, 1, torch.device("cpu"))
    rng = np.random.default_rng(0)
    rows = config.batch_size
    batch = {
        "obs": rng.integers(0, 256, (1, rows, *OBS_SHAPE), dtype=np.uint8),
        "next_obs": rng.integers(0, 256, (1, rows, *OBS_SHAPE), dtype=np.uint8),
        "action": rng.uniform(-1, 1, (1, rows, 1)).astype(np.float32),
        "reward": np.ones((1, rows, 1), np.float32),
        "discount": np.full((1, rows, 1), 0.97, np.float32),
    }
    agent.update(batch, step=10).read()  # optimizer moments exist
    state = agent.member_state_dict(0)
    assert state["feature_order"] == FEATURE_ORDER
    # What a checkpoint from before the change holds for the same agent.
    chw = agent.encoder.out_shape
    old = {key: value for key, value in state.items() if key != "feature_order"}
    for net in ("actor", "critic", "critic_target"):
        old[net] = {**old[net], "trunk.0.weight": _to_chw(old[net]["trunk.0.weight"], chw)}
    for opt in ("actor_opt", "critic_opt"):
        moments = {k: _to_chw(v, chw) if k.startswith("exp_avg") else v for k, v in old[opt]["state"][0].items()}
        old[opt] = {**old[opt], "state": {**old[opt]["state"], 0: moments}}

    assert "encoder features in (C, H, W) order" in checkpoint.outdated({"agent": old})
    upgraded = checkpoint.upgrade_agent_state(old)  # python -m agent.checkpoint upgrade, on the agent's part
    assert not checkpoint.outdated({"agent": upgraded, "next_q_bias_frame": 0, "q_bias_pending": []})

    resumed = DrQV2Agent(tiny_config(obs_type="pixels", seed=7), OBS_SHAPE, 1, torch.device("cpu"))
    resumed.load_member_state_dict(0, upgraded)
    for name in ("actor", "critic", "critic_target", "encoder"):
        for key, value in getattr(agent, name).state_dict().items():
            torch.testing.assert_close(getattr(resumed, name).state_dict()[key], value, msg=f"{name}.{key}")
    for name in ("actor_opt", "critic_opt"):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                getattr(resumed, name).member_state_dict(0)["state"][0][key],
                getattr(agent, name).member_state_dict(0)["state"][0][key],
            )
    obs, action = batch["obs"][0, :4], batch["action"][0, :4]
    np.testing.assert_allclose(resumed.q_values([obs], [action])[0], agent.q_values([obs], [action])[0], rtol=1e-6)
    np.testing.assert_allclose(
        resumed.act(obs[None, 0], 10**6, eval_mode=True), agent.act(obs[None, 0], 10**6, eval_mode=True)
    )
