"""The allocator setting run_trial applies: freed large tensors are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.allocator import keep_freed_memory

# An update-like cycle: five large tensors alive together (the float batch, conv activations),
# small ones allocated in between, all freed; repeated. Prints the page faults of the last cycles.
PROBE = """
import resource, sys
import torch
from agent.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def cycle():
    alive = [torch.empty(n).fill_(1.0) for n in (16_000_000, 14_000_000, 12_500_000, 11_000_000, 10_000_000)]
    small = [torch.empty(1000 + i) for i in range(20)]
    del alive, small
for _ in range(4):
    cycle()  # the heap grows to the cycle's peak once
start = faults()
for _ in range(4):
    cycle()
print(applied, faults() - start)
"""


def probe(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    _, default_faults = probe("default")
    applied, kept_faults = probe("keep")
    assert applied == "True"
    assert default_faults > 4 * 60_000  # 4 x 254 MB of fresh 4 KiB pages without the setting
    assert kept_faults < default_faults / 10


def test_applies_once_per_process():
    assert keep_freed_memory() is keep_freed_memory()
