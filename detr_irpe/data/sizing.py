"""Image sizes and the number of queries suited to a custom dataset, for the options that a
run from scratch on custom data does not give (:func:`sizes_from_data`).

DETR's own values (shorter side 480-800, evaluation at 800, 100 queries) fit COCO; on a set
of 200-pixel tiles they would blow every image up 4x.  Here they follow the training set:

- ``val_size``: the 90th percentile of the training images' shorter sides (nearest rank),
  times ``--image_zoom`` (1 by default; the scratch preset's 1.4 puts small objects on more
  feature cells), rounded to a multiple of 8 pixels:
  at most a tenth of the images are shrunk for evaluation, and a few outsized images do
  not blow up the rest.  (The median shrank half of a set of mixed sizes, and its objects
  with them: on the generated shapes, 96-128 px, it cost 0.11-0.21 AP after 2,500 steps,
  docs/scratch_training.md);
- ``train_scales``: ``val_size`` times 0.8, 0.9, 1.0, 1.1 and 1.2 (DETR trains from 0.6 to
  1.0 of its evaluation size; a small set keeps its objects nearer their own size),
  rounded to multiples of 8 pixels (and of ``--size_multiple``), so that ``val_size`` is
  one of them.  Where an image ends inside its last feature cell shifts the cells'
  positions (they are normalised by the cells the image covers, as in DETR), and a model
  learns the shifts of the sizes it was trained at: the generated shapes trained at
  136-200 px, all 8 past a multiple of 16, scored 0.01-0.04 AP less at 165 px than at 168
  (docs/scratch_training.md);
- ``max_size``: ``val_size`` times DETR's 1333 / 800, so elongated images stay bounded;
- ``num_queries``: twice the most objects in one training image, at least 10, rounded up
  to a multiple of 5 ("no object" must stay the common answer, and Hungarian matching
  needs spare queries).
"""

from __future__ import annotations

import math
from collections import Counter

VAL_PERCENTILE = 0.9  # of the shorter sides: the evaluation size
SCALE_FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2)
SIZE_STEP = 8  # pixels: every size is a multiple
MAX_TO_VAL = 1333 / 800  # DETR's longest / shorter side of evaluation
MIN_QUERIES = 10
SIZED_OPTIONS = ("train_scales", "val_size", "max_size", "num_queries")


def round_to_multiple(value: float, step: int) -> int:
    """``value`` to the nearest multiple of ``step`` (halves up), at least ``step``."""
    return max(step, math.floor(value / step + 0.5) * step)


def sizes_from_data(images: list[dict], annotations: list[dict],
                    zoom: float = 1.0, multiple: int = 1) -> tuple[dict, str]:
    """``(options, reason)``: the values of :data:`SIZED_OPTIONS` for a training set given as
    its COCO ``images`` (with ``width`` and ``height``) and ``annotations``; ``reason`` says
    what they were derived from, for the log.  ``zoom``: the evaluation size is that many
    times the percentile (rounded), and the other sizes follow it.  ``multiple``
    (``--size_multiple``): the sizes are multiples of it as well as of 8 pixels, so that the
    printed sizes are the ones the resize makes."""
    shorter = sorted(min(int(im["width"]), int(im["height"])) for im in images)
    percentile = shorter[math.ceil(VAL_PERCENTILE * len(shorter)) - 1]
    step = math.lcm(SIZE_STEP, multiple)
    val_size = round_to_multiple(percentile * zoom, step)
    per_image = Counter(a["image_id"] for a in annotations)
    most = max(per_image.values(), default=0)
    queries = max(MIN_QUERIES, math.ceil(2 * most / 5) * 5)
    options = {
        "train_scales": sorted({round_to_multiple(val_size * f, step) for f in SCALE_FACTORS}),
        "val_size": val_size,
        "max_size": int(round(val_size * MAX_TO_VAL)),
        "num_queries": queries,
    }
    reason = (f"{len(images)} training images, shorter sides {shorter[0]}-{shorter[-1]} px "
              f"({VAL_PERCENTILE * 100:.0f}th percentile {percentile}"
              f"{f', zoomed {zoom:g}x' if zoom != 1 else ''}), at most {most} objects in one image")
    return options, reason
