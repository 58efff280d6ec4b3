"""The integer-crop random shift equals DrQ-v2's bilinear grid_sample shift, for every member of a pack."""

from __future__ import annotations

import torch

from agent.networks import RandomShift
from bench.reference_update import grid_sample_shift


def test_crop_matches_bilinear_shift_for_every_offset():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 81, 9, 84, 84), dtype=torch.uint8)  # 2 members, 81 images each
    aug = RandomShift(pad=4)
    ours = aug(images, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert ours.dtype == torch.uint8 and ours.shape == (81, 2 * 9, 84, 84)  # member k = channel group k
    assert ours.is_contiguous(memory_format=torch.channels_last)
    for k, seed in enumerate((1, 2)):
        shift = torch.randint(0, 9, size=(81, 2), generator=torch.Generator().manual_seed(seed))  # the same draw
        assert len({tuple(s) for s in shift.tolist()}) > 40  # many of the 81 offsets exercised
        reference = grid_sample_shift(images[k].float(), 4, shift)
        member = ours[:, 9 * k : 9 * (k + 1)]
        assert (member.float() - reference).abs().max() < 1e-2  # exact up to float rounding in the bilinear weights
