"""The encoder flattens its output in (H, W, C) order; (C, H, W)-order checkpoints still resume exactly."""

from __future__ import annotations

import numpy as np
import torch

from agent.drqv2 import FEATURE_ORDER, DrQV2Agent
from agent.networks import Encoder

OBS_SHAPE = (9, 24, 24)


def test_features_are_flattened_in_hwc_order_in_both_memory_formats():
    torch.manual_seed(0)
    nchw, nhwc = Encoder(OBS_SHAPE, channels_last=False), Encoder(OBS_SHAPE, channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    obs = torch.randint(0, 256, (4, *OBS_SHAPE), dtype=torch.uint8)
    conv_out = nchw.convnet(obs.float() / 255.0 - 0.5)  # (n, C, H, W)
    expected = conv_out.permute(0, 2, 3, 1).reshape(4, -1)
    torch.testing.assert_close(nchw(obs), expected)
    torch.testing.assert_close(nhwc(obs), expected)


def _to_chw(weight: torch.Tensor, chw: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = chw
    return weight.reshape(weight.shape[0], h, w, c).permute(0, 3, 1, 2).reshape(weight.shape[0], -1)


def test_chw_order_checkpoint_loads_as_the_same_function(tiny_config):
    config = tiny_config(obs_type="pixels", critic_norm="batch_norm", actor_norm="batch_norm")
    torch.manual_seed(0)
    agent = DrQV2Agent(config, OBS_SHAPE, 1, torch.device("cpu"))
    rng = np.random.default_rng(0)
    rows = config.batch_size
    batch = {"obs": rng.integers(0, 256, (rows, *OBS_SHAPE), dtype=np.uint8),
             "next_obs": rng.integers(0, 256, (rows, *OBS_SHAPE), dtype=np.uint8),
             "action": rng.uniform(-1, 1, (rows, 1)).astype(np.float32),
             "reward": np.ones((rows, 1), np.float32), "discount": np.full((rows, 1), 0.97, np.float32)}
    agent.update(batch, step=10)  # optimizer moments exist
    state = agent.state_dict()
    assert state["feature_order"] == FEATURE_ORDER
    # What a checkpoint from before the change holds for the same agent.
    chw = agent.encoder.out_shape
    old = {key: value for key, value in state.items() if key != "feature_order"}
    for net in ("actor", "critic", "critic_target"):
        old[net] = {**old[net], "trunk.0.weight": _to_chw(old[net]["trunk.0.weight"], chw)}
    for opt in ("actor_opt", "critic_opt"):
        moments = {k: _to_chw(v, chw) if k.startswith("exp_avg") else v for k, v in old[opt]["state"][0].items()}
        old[opt] = {**old[opt], "state": {**old[opt]["state"], 0: moments}}

    torch.manual_seed(1)
    resumed = DrQV2Agent(config, OBS_SHAPE, 1, torch.device("cpu"))
    resumed.load_state_dict(old)
    for name in ("actor", "critic", "critic_target", "encoder"):
        for key, value in getattr(agent, name).state_dict().items():
            torch.testing.assert_close(getattr(resumed, name).state_dict()[key], value, msg=f"{name}.{key}")
    for name in ("actor_opt", "critic_opt"):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(getattr(resumed, name).state_dict()["state"][0][key],
                                       getattr(agent, name).state_dict()["state"][0][key])
    obs, action = batch["obs"][:4], batch["action"][:4]
    np.testing.assert_allclose(resumed.q_values(obs, action), agent.q_values(obs, action), rtol=1e-6)
    np.testing.assert_allclose(resumed.act(obs[0], 10**6, eval_mode=True), agent.act(obs[0], 10**6, eval_mode=True))
