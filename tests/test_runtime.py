"""The CPU settings of ``detr_irpe/machine/cpu.py``: oneDNN's cache and which mixed precision a
run gets on which CPU."""

import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.parametrize("amp, has_bf16, device, runs", [
    ("bf16", False, "cpu", "off"), ("bf16", True, "cpu", "bf16"), ("bf16", False, "cuda", "bf16"),
    ("fp16", False, "cpu", "fp16"), ("off", True, "cpu", "off")])
def test_bf16_runs_in_float32_on_a_cpu_without_bf16_kernels(monkeypatch, capsys, amp, has_bf16,
                                                            device, runs):
    from detr_irpe.config import OptimConfig, RunConfig
    from detr_irpe.machine import cpu as runtime
    from detr_irpe.training.loop import LoopSettings

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    loop = LoopSettings.of(OptimConfig(amp=amp), RunConfig(), torch.device(device))
    assert loop.amp == runs
    assert ("in float32 instead" in capsys.readouterr().out) == (runs != amp)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads the Linux CPU flags")
def test_bf16_runs_where_the_cpu_has_native_bf16_arithmetic():
    from detr_irpe.machine.cpu import cpu_has_bf16

    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    # x86: AVX512_BF16 or AMX; the older AVX-512 CPUs convert every value (slower than fp32)
    if "avx2" in flags:
        assert cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16", "amx_tile"} & flags)


CACHE_PROGRAM = """
from detr_irpe.machine.cpu import ONEDNN_CACHE, configure_cpu
print(configure_cpu(1)["onednn_cache"], ONEDNN_CACHE)
"""


@pytest.mark.slow  # in a process of its own: configure_cpu sets the environment
def test_onednn_cache_is_raised_unless_the_environment_sets_it():
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}

    def cache(**extra) -> list[str]:
        return subprocess.run([sys.executable, "-c", CACHE_PROGRAM], env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.split()

    set_by_us, wanted = cache()
    assert set_by_us == wanted and int(wanted) > 1024  # oneDNN's default is 1024
    assert cache(ONEDNN_PRIMITIVE_CACHE_CAPACITY="300")[0] == "300"
