"""The integer-crop random shift equals DrQ-v2's bilinear grid_sample shift."""

from __future__ import annotations

import torch

from agent.networks import RandomShift
from bench.reference_update import grid_sample_shift


def test_crop_matches_bilinear_shift_for_every_offset():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (81, 9, 84, 84), dtype=torch.uint8)
    aug = RandomShift(pad=4)
    torch.manual_seed(1)
    ours = aug(images)
    torch.manual_seed(1)
    shift = torch.randint(0, 9, size=(81, 2))  # the same draw RandomShift makes
    assert len({tuple(s) for s in shift.tolist()}) > 40  # many of the 81 offsets exercised
    reference = grid_sample_shift(images.float(), 4, shift)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert (ours.float() - reference).abs().max() < 1e-2  # exact up to float rounding in the bilinear weights
