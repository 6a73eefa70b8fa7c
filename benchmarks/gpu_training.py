"""The training-throughput sections of ``python -m benchmarks.gpu_check``:

- ``scaling``: training images/s of DETR-R50 + iRPE-K at batch 2, 8 and 16 (COCO-sized
  images, 800 x 1066 and 800 x 1201 alternating) and the busy fraction of each step: the
  profiler's kernel time over the wall time of the profiled steps (the profiler's own
  overhead makes it a slight underestimate).  Targets, judged on a GPU only: busy >= 80 %
  at the recipe's total batch (16) on one GPU, and images/s at 16 >= 2.5 x batch 2's;
- ``compile``: the step at batch 16 eager, with ``--compile`` and with ``--compile
  --size_buckets 3`` (:mod:`benchmarks.compiled`).

On the CPU (``--device cpu``, with ``--tiny`` for a tiny model and small images) the same
code runs; the busy fraction is then the time inside ATen ops over the wall time, and the
targets are reported as not measured.
"""

from __future__ import annotations

import time

import torch

from benchmarks.compiled import compile_section
from benchmarks.gpu import verdict
from benchmarks.timing import sync
from benchmarks.workload import (
    IMAGE_SIZES,
    IRPE_K,
    TINY_IMAGE_SIZES,
    TINY_MODEL,
    build_model,
    make_batch,
    train_step_fn,
)

BATCHES = (2, 8, 16)
RECIPE_BATCH = 16  # the recipe's total batch (DETR: 8 GPUs x 2 images)
BUSY_TARGET = 0.80
SCALING_TARGET = 2.5  # images/s at RECIPE_BATCH over images/s at batch 2
NOT_MEASURED = "not measured: no GPU (run on a GPU with --device cuda)"


def _busy_fraction(step, device, steps: int = 2) -> float:
    """Kernel time (CUDA) or ATen op time (CPU) of ``steps`` steps over their wall time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    if device.type == "cuda":
        busy_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    else:
        busy_us = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
    return busy_us / 1e6 / wall


def _images_per_second(step, batch: int, reps: int, device) -> float:
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


def scaling_section(device, reps: int, tiny: bool = False) -> dict:
    """Images/s and busy fraction at every batch of :data:`BATCHES`."""
    options, sizes = (TINY_MODEL, TINY_IMAGE_SIZES) if tiny else ({}, IMAGE_SIZES)
    out = {"device": device.type, "batches": {}}
    for batch in BATCHES:
        model, criterion, _ = build_model(IRPE_K, device, **options)
        images = make_batch(device, [sizes[n % len(sizes)] for n in range(batch)])
        step = train_step_fn(model, criterion, device, batches=[images])
        step()  # warm-up: kernels, bucket maps, AdamW state
        rate = _images_per_second(step, batch, reps, device)
        busy = _busy_fraction(step, device)
        out["batches"][str(batch)] = {"images_per_s": rate, "busy_fraction": busy}
        print(f"batch {batch:3d}: {rate:7.2f} images/s, busy {busy:.0%} "
              f"({'GPU kernels' if device.type == 'cuda' else 'CPU ops, not a GPU figure'})")
        del model, criterion, step, images
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def report_scaling(res: dict) -> list[dict]:
    """The two targets as PASS/FAIL rows on a GPU; not measured elsewhere."""
    rows_in = res["batches"]
    top, base = rows_in[str(RECIPE_BATCH)], rows_in[str(BATCHES[0])]
    ratio = top["images_per_s"] / base["images_per_s"]
    checks = [(f"GPU busy at batch {RECIPE_BATCH} >= {BUSY_TARGET:.0%}",
               top["busy_fraction"] >= BUSY_TARGET, f"{top['busy_fraction']:.1%}"),
              (f"images/s at batch {RECIPE_BATCH} >= {SCALING_TARGET} x batch {BATCHES[0]}",
               ratio >= SCALING_TARGET, f"{ratio:.2f} x ({top['images_per_s']:.1f} vs "
               f"{base['images_per_s']:.1f} images/s)")]
    if res["device"] != "cuda":
        return [verdict(name, None, f"{NOT_MEASURED}; on this device: {detail}")
                for name, _, detail in checks]
    return [verdict(name, ok, detail) for name, ok, detail in checks]


def compile_check_section(device, reps: int, tiny: bool = False) -> dict:
    """Eager vs --compile vs --compile with buckets at the recipe's batch (2 with --tiny,
    whose compile runs with torch.compile's ``eager`` backend to stay short)."""
    return compile_section(device, reps, batch_size=2 if tiny else RECIPE_BATCH, tiny=tiny,
                           backend="eager" if tiny else "inductor")


def report_compile(res: dict) -> list[dict]:
    variants = res["variants"]
    ran = all(v["images_per_s"] > 0 for v in variants.values())
    detail = ", ".join(f"{name} {v['images_per_s']:.2f} images/s ({v['ratio']:.3f} x eager)"
                       for name, v in variants.items())
    return [verdict(f"--compile and --size_buckets train at batch {res['batch_size']}", ran,
                    detail)]
