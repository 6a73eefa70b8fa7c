"""The process memory settings: freed memory is reused, not faulted in again."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

# Allocate and free a 64 MiB tensor again and again after configure_memory(); print the
# page faults of 10 rounds after 15 rounds of warm-up (glibc's heap settles in the first
# few: measured, 6 rounds still fault).
PROGRAM = """
import resource
from detr_irpe.machine.memory import configure_memory
print(configure_memory()["keep_freed_memory"])
import torch
for _ in range(15):
    x = torch.ones(16 * 2**20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.ones(16 * 2**20); del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(**env_vars) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(THP_MEM_ALLOC_ENABLE="0", **env_vars)  # 4 KiB pages: one fault per page
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensors_are_reused_without_page_faults():
    state, faults = run()
    default_state, default_faults = run(MALLOC_MMAP_MAX_="65536")  # glibc's default
    assert (state, default_state) == ("on", "user")
    # glibc's default maps and unmaps each 64 MiB block: 10 x 16384 pages to fault in.
    assert default_faults > 10 * 16384 * 0.9
    assert faults < 1000
