"""The folder-level job behind ``tools/predict.py``: find the image files, run a
:class:`~detr_irpe.inference.detector.Detector` on them batch by batch and write COCO results (and,
on request, pictures of the detections) into an output folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from glob import escape as glob_escape
from glob import glob
from pathlib import Path

from torch import Tensor

from detr_irpe.files import refuse_overwriting_inputs, write_json
from detr_irpe.inference.detector import Detector
from detr_irpe.inference.image_input import ImageReadError
from detr_irpe.inference.settings import BATCH_SIZE, THRESHOLD
from detr_irpe.pictures.detections import draw_detections, save_png
from detr_irpe.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(spec: str | os.PathLike) -> tuple[list[Path], Path | None]:
    """Image files named by ``spec``: one file, a folder (its files with an image
    extension, not recursive) or a glob pattern (``"photos/**/*.jpg"`` recurses).

    Returns the sorted paths and the folder that ``file_name`` entries are written
    relative to (the folder for a folder spec, else ``None``: paths as matched).
    Raises ``FileNotFoundError`` naming ``spec`` when nothing matches.
    """
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return [path], None
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise FileNotFoundError(
                f"no images in folder {text!r} (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        return files, path
    files = _glob_files(text)
    if not files:
        raise FileNotFoundError(f"no images matched {text!r} (not a file, folder or matching glob)")
    return files, None


def _glob_files(pattern: str) -> list[Path]:
    """The files matching a glob ``pattern``, each real file once (sorted by the path as
    matched).  ``**`` stands for any folders below, symlinked ones included, each real
    folder visited once, so a symlink loop neither repeats files nor hangs."""
    head, doublestar, tail = pattern.partition("**")
    if not doublestar:
        matches = glob(pattern)
    else:
        tail = tail.lstrip("/" + os.sep).replace("**", "*") or "*"
        matches = [match for base in glob(head or os.curdir) for folder in _folders_once(base)
                   for match in glob(os.path.join(glob_escape(folder), tail))]
    files: dict[str, Path] = {}
    for match in sorted(os.path.normpath(m) for m in matches):
        if os.path.isfile(match):
            files.setdefault(os.path.realpath(match), Path(match))
    return sorted(files.values())


def _folders_once(base: str):
    """``base`` and the folders below it, following symlinks, each real folder once."""
    seen = set()
    for folder, subfolders, _ in os.walk(base, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        yield folder


def coco_results(det: dict, image_id: int) -> list[dict]:
    """One image's detections in COCO results format: ``image_id``, ``category_id``
    (original id), ``bbox`` absolute (x, y, width, height), ``score``."""
    xywh = det["boxes"].clone()
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [float(v) for v in box],
         "score": float(s)}
        for box, c, s in zip(xywh.tolist(), det["labels"].tolist(), det["scores"].tolist())
    ]


def _image_ids_from_coco(coco_json: str | os.PathLike, names: list[str]) -> list[int]:
    """Image ids of a COCO file for our file names: matched by ``file_name``, else by the
    base name when that is unique in the file."""
    with open(coco_json) as f:
        images = json.load(f).get("images", [])
    by_name = {img["file_name"]: img["id"] for img in images}
    by_base: dict[str, list[int]] = {}
    for img in images:
        by_base.setdefault(os.path.basename(img["file_name"]), []).append(img["id"])
    ids, unmatched = [], []
    for name in names:
        if name in by_name:
            ids.append(by_name[name])
        elif len(by_base.get(os.path.basename(name), [])) == 1:
            ids.append(by_base[os.path.basename(name)][0])
        else:
            ids.append(None)
            unmatched.append(name)
    if unmatched:
        raise ValueError(
            f"{coco_json}: no image entry (by file_name or unique base name) for "
            f"{len(unmatched)} image(s), e.g. {unmatched[:3]}"
        )
    return ids


@dataclass
class PredictionRun:
    """What :func:`predict_to_folder` did."""

    images: list[dict] = field(default_factory=list)  # id, file_name, width, height
    detections: list[dict] = field(default_factory=list)  # COCO results
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    rendered: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _read_images(
    detector: Detector,
    files: Sequence[Path],
    indices: range,
    strict: bool,
    log: Callable[[str], None],
    skipped: list[tuple[str, str]],
) -> list[tuple[int, Tensor]]:
    """(index, uint8 RGB (3, H, W) pixels) of the files at ``indices`` that ``detector``
    can take (:meth:`Detector.pixels`).

    An unreadable or unusable file is logged and added to ``skipped`` as (path, reason), or, with
    ``strict``, its :class:`ImageReadError` is raised."""
    read = []
    for k in indices:
        try:
            read.append((k, detector.pixels(files[k])))
        except ImageReadError as err:
            if strict:
                raise
            log(f"skipped: {err}")
            skipped.append((str(files[k]), str(err)))
    return read


def _detect(
    detector: Detector, read: list[tuple[int, Tensor]], threshold: float
) -> list[tuple[int, Tensor, dict]]:
    """(index, pixels, detections) of each read image, all in one call of the detector."""
    if not read:
        return []
    pixels = [image for _, image in read]
    dets = detector.predict(pixels, threshold=threshold, batch_size=len(pixels))
    return [(k, image, det) for (k, image), det in zip(read, dets)]


def _image_entry(image_id: int, file_name: str, pixels: Tensor) -> dict:
    """The ``images.json`` entry of one image."""
    return {"id": image_id, "file_name": file_name, "width": pixels.shape[-1],
            "height": pixels.shape[-2]}


def picture_paths(files: Sequence[Path], ids: Sequence[int], out: Path) -> list[Path]:
    """Where ``--render`` draws each file: ``out/<stem>.png``, or ``out/<stem>_<id>.png``
    when an earlier file has the same stem (decided for every file, read or not)."""
    taken: set[str] = set()
    paths = []
    for path, image_id in zip(files, ids):
        name = f"{path.stem}.png"
        if name in taken:
            name = f"{path.stem}_{image_id}.png"
        taken.add(name)
        paths.append(out / name)
    return paths


def _write_results(
    run: PredictionRun, out: Path, total: int, threshold: float, render: bool,
    log: Callable[[str], None],
) -> None:
    """Write ``predictions.json`` and ``images.json`` and log what the run did."""
    write_json(out / "predictions.json", run.detections, indent=None)
    write_json(out / "images.json", run.images, indent=None)
    if run.skipped:
        log(f"{len(run.skipped)} of {total} image(s) could not be read and were skipped")
    log(f"{len(run.detections)} detections on {len(run.images)} image(s) with score >= "
        f"{threshold} -> {out / 'predictions.json'} (image ids: {out / 'images.json'})")
    if render:
        log(f"pictures: {len(run.rendered)} PNG(s) in {out}")


def predict_to_folder(
    detector: Detector,
    files: Sequence[Path],
    out_dir: str | os.PathLike,
    threshold: float = THRESHOLD,
    batch_size: int = BATCH_SIZE,
    render: bool = False,
    strict: bool = False,
    root: Path | None = None,
    coco_json: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    progress_every_s: float = 5.0,
) -> PredictionRun:
    """Predict on ``files`` and write to ``out_dir``:

    - ``predictions.json``: COCO results (``image_id``, ``category_id`` original ids,
      ``bbox`` absolute xywh, ``score``), loadable with ``COCO.loadRes``;
    - ``images.json``: ``[{id, file_name, width, height}]`` of the images read; ``id`` is
      the index in the sorted file list (or the id in ``coco_json``), ``file_name`` is
      relative to ``root`` when given;
    - with ``render``: ``<stem>.png`` per image, the original image with its boxes and
      "name score" labels (``<stem>_<id>.png`` when two images share a stem).

    Raises ``ValueError`` before writing anything when an output would replace one of
    ``files`` or ``coco_json``.  An unreadable image is skipped with a message (listed in the result) unless
    ``strict``, which raises :class:`ImageReadError`.
    """
    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out_dir)
    names = [str(p.relative_to(root)) if root is not None else str(p) for p in files]
    ids = _image_ids_from_coco(coco_json, names) if coco_json else list(range(len(files)))
    pictures = picture_paths(files, ids, out) if render else []
    refuse_overwriting_inputs([out / "predictions.json", out / "images.json", *pictures],
                              [*files, *([coco_json] if coco_json else [])], "--out")
    out.mkdir(parents=True, exist_ok=True)
    run = PredictionRun()
    progress = Progress("predict:", len(files), min_seconds=progress_every_s, unit="images",
                        first=True, log=log)
    for first in range(0, len(files), batch_size):
        batch = range(first, min(first + batch_size, len(files)))
        read = _read_images(detector, files, batch, strict, log, run.skipped)
        for k, pixels, det in _detect(detector, read, threshold):
            run.images.append(_image_entry(ids[k], names[k], pixels))
            run.detections.extend(coco_results(det, ids[k]))
            if render:
                save_png(draw_detections(pixels, det), pictures[k])
                run.rendered.append(pictures[k])
        progress.update(batch.stop)
    run.seconds = progress.seconds
    _write_results(run, out, len(files), threshold, render, log)
    return run
