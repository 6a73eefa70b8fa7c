"""CPU settings that matter for speed, applied by the project itself.

- threads: torch uses one intra-op thread per core this process may run on
  (``os.sched_getaffinity``; ``--threads`` overrides);
- memory (freed memory kept for reuse): ``detr_irpe/machine/memory.py``,
  applied before torch is imported; from your own Python code, call its
  ``configure_memory()`` before ``import torch``;
- oneDNN's primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) raised from 1024 to
  :data:`ONEDNN_CACHE`: DETR's batches come in ever-new shapes (random crops, padding to the
  batch's largest image), every shape needs its own convolution primitives, and with the
  default capacity the cache evicts the common ones, so that the step slowed down by a
  third over the first epochs of a small CPU run; a value in the environment wins;
- ``--amp bf16`` only where the CPU does bf16 arithmetic natively (x86: AVX512_BF16 or
  AMX, as on Intel Cooper Lake, Sapphire Rapids and newer and AMD Zen 4 and newer). oneDNN
  also has bf16 kernels for the older AVX-512 CPUs (Skylake to Ice Lake), but they convert
  every value and train slower than float32 there (1.08 against 1.51 steps/s on the scratch
  preset, an Ice Lake Xeon); on AVX2-only CPUs (AMD Zen 3 and older, many laptops) bf16
  falls to reference code, about 8x slower. There :func:`amp_on` runs float32 instead;
- channels-last for the backbone only where it helps: on the CPU the ResNet gets a
  channels-last input in inference (no autograd) and in training under bf16 autocast;
  float32 training keeps the contiguous format (DETR-R50 trained slower in channels-last)
  unless ``--channels_last_training`` asks for it (the CPU presets do).

The figures: docs/benchmarks.md, "CPU settings applied by the project".
"""

from __future__ import annotations

import os
import platform

import torch

ONEDNN_CACHE = 8192  # primitives (the JIT-compiled kernels for one shape) oneDNN keeps


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_cpu(threads: int | None = None) -> dict:
    """Apply the CPU settings above; returns what was set."""
    n = threads or available_cores()
    torch.set_num_threads(n)
    # Read when oneDNN creates its cache, at the first convolution: no model has run yet.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))
    return {"threads": n, "onednn_cache": os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]}


def cpu_has_bf16() -> bool:
    """Whether bf16 is faster than float32 on this CPU: on x86, native bf16 arithmetic
    (AVX512_BF16 or AMX); elsewhere (ARM), oneDNN's bf16 kernels at all."""
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if platform.machine().lower() not in ("x86_64", "amd64") or native is None:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(native() or torch.cpu._is_amx_tile_supported())


def amp_on(device: torch.device, amp: str, verbose: bool = True) -> str:
    """The mixed precision ``--amp`` gets on ``device``: bf16 on a CPU where it is slower
    than float32 (:func:`cpu_has_bf16`) becomes "off" (float32), with a note; everything else is kept."""
    if amp != "bf16" or device.type != "cpu" or cpu_has_bf16():
        return amp
    if verbose:
        print("--amp bf16: this CPU has no native bf16 arithmetic (AVX512_BF16 or AMX), where "
              "bf16 runs slower than float32 (1.4x on AVX-512, 8x on AVX2): training and "
              "evaluating in float32 instead")
    return "off"
