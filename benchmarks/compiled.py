"""The training step eager, with ``--compile``, and with ``--compile --size_buckets 3``,
side by side (``python -m benchmarks.speed --compile``; the GPU check's
``compile`` section).

The step turns over a few batches of different sizes, as training does (each batch's
shorter side is one of the training scales), so the eager step pads each to its own
largest image, the compiled one sees new shapes (and compiles again, then turns to
dynamic shapes), and the bucketed one sees only its buckets' static shapes.  Every shape
is compiled in the warm-up, which is timed apart (``warmup_s``).
"""

from __future__ import annotations

import time

from benchmarks.timing import interleaved, summarise, sync
from benchmarks.workload import IRPE_K, TINY_MODEL, build_model, make_batch, train_step_fn
from detr_irpe.data.buckets import bucket_for, size_buckets
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.training.compiled import compile_model

# (height, width) pairs of a batch, shorter sides among DETR's scales, longer <= 1333.
SIZE_SETS = [[(800, 1066), (800, 1201)], [(608, 810), (640, 853)], [(704, 938), (736, 1100)]]
TINY_SIZE_SETS = [[(64, 96), (64, 76)], [(48, 64), (48, 70)], [(56, 90), (64, 64)]]
BUCKETS = 3
VARIANTS = ("eager", "compiled", "compiled + buckets", "eager (again)")


def training_batches(device, batch_size: int, size_sets, buckets=None) -> list:
    """One (images, targets) per size set, ``batch_size`` images cycling through its sizes;
    with ``buckets``, the images come as an :class:`ImageBatch` padded to the bucket."""
    batches = []
    for sizes in size_sets:
        sizes = [sizes[n % len(sizes)] for n in range(batch_size)]
        images, targets = make_batch(device, sizes)
        if buckets is not None:
            size = bucket_for(max(h for h, _ in sizes), max(w for _, w in sizes), buckets)
            images = ImageBatch.from_images(images, size=size)
        batches.append((images, targets))
    return batches


def _shape(images) -> tuple[int, int]:
    if isinstance(images, ImageBatch):
        return tuple(images.tensors.shape[-2:])
    return max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)


def compile_section(device, reps: int, batch_size: int = 2, tiny: bool = False,
                    backend: str = "inductor") -> dict:
    """Median step time and images/s of every variant (ratios to eager), the padded
    shapes each one saw and the warm-up (compile) time.  ``backend``: torch.compile's
    (the tests use ``eager``, which skips code generation)."""
    options = TINY_MODEL if tiny else {}
    size_sets = TINY_SIZE_SETS if tiny else SIZE_SETS
    max_size = max(w for sizes in size_sets for _, w in sizes)
    scales = sorted({h for sizes in size_sets for h, _ in sizes})
    buckets = size_buckets(BUCKETS, max_size, scales)
    fns, shapes, warmup = {}, {}, {}
    for name in VARIANTS:
        model, criterion, _ = build_model(IRPE_K, device, **options)
        bucketed = name == "compiled + buckets"
        if name.startswith("compiled"):
            compile_model(model, static_shapes=bucketed, backend=backend)
        batches = training_batches(device, batch_size, size_sets, buckets if bucketed else None)
        shapes[name] = sorted({_shape(images) for images, _ in batches})
        fns[name] = train_step_fn(model, criterion, device, batches=batches)
        start = time.perf_counter()
        for _ in batches:  # every shape once: compiled here
            fns[name]()
        sync(device)
        warmup[name] = time.perf_counter() - start
    result = summarise(interleaved(fns, reps * len(size_sets), device), base="eager")
    for name, r in result.items():
        r.update(images_per_s=batch_size / r["median_s"], shapes=shapes[name],
                 warmup_s=warmup[name])
    return {"batch_size": batch_size, "buckets": buckets, "backend": backend,
            "variants": result}


def print_compile(res: dict) -> None:
    print(f"\n## Training step, batch {res['batch_size']}, eager vs --compile "
          f"(backend {res['backend']}) vs --compile --size_buckets {BUCKETS} "
          f"(buckets {res['buckets']})")
    print(f"{'variant':22s} {'median s':>9s} {'img/s':>7s} {'x eager':>8s} {'warm-up s':>10s}  "
          f"shapes")
    for name, r in res["variants"].items():
        print(f"{name:22s} {r['median_s']:9.3f} {r['images_per_s']:7.2f} {r['ratio']:8.3f} "
              f"{r['warmup_s']:10.1f}  {len(r['shapes'])}")
    print("(x eager: median over rounds of the time ratio within a round; eager (again) is the "
          "noise floor)")
