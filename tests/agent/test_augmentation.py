"""The integer-crop random shift equals DrQ-v2's bilinear grid_sample shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agent.networks import RandomShift


def drqv2_shift(x: torch.Tensor, pad: int, shift: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug with the shifts given instead of drawn."""
    n, _, h, w = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    grid = base_grid + shift.view(n, 1, 1, 2).float() * 2.0 / (h + 2 * pad)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def test_crop_matches_bilinear_shift_for_every_offset():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (81, 9, 84, 84), dtype=torch.uint8)
    aug = RandomShift(pad=4)
    torch.manual_seed(1)
    ours = aug(images)
    torch.manual_seed(1)
    shift = torch.randint(0, 9, size=(81, 2))  # the same draw RandomShift makes
    assert len({tuple(s) for s in shift.tolist()}) > 40  # many of the 81 offsets exercised
    reference = drqv2_shift(images.float(), 4, shift)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert (ours.float() - reference).abs().max() < 1e-2  # exact up to float rounding in the bilinear weights
