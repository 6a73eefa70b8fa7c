"""Run a trained detector on images: :class:`Detector` and the folder-level job behind
``tools/predict.py``.

    detector = Detector.from_checkpoint("output/checkpoint_best.pth")
    dets = detector.predict(["a.jpg", "b.jpg"], threshold=0.5)
    # dets[i]["boxes"]  float32 (n, 4) absolute (x0, y0, x1, y1) pixels of the ORIGINAL image
    # dets[i]["scores"] float32 (n,)   best real-class probability, descending
    # dets[i]["labels"] int64 (n,)     original category ids (not model labels)
    # dets[i]["names"]  list[str]      category names

Pre-processing is the evaluation transform (shorter side ``size``, longer side at most
``max_size``, :func:`~detr_irpe.data.transforms.resize_size`; ImageNet mean/std) and the
backbone runs on every image alone (``DETR.per_image_backbone``), so a detection does not
depend on the other images of its batch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .categories import COCO_CATEGORY_NAMES, COCO_NUM_CLASSES, UNNAMED_COCO_ID
from .checkpoint import load_checkpoint
from .config import EVAL_MAX_SIZE, EVAL_SIZE
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_size
from .files import write_json
from .models.detr import DETR, PostProcess, build_detr

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

ImageInput = str | os.PathLike | Image.Image | Tensor


class ImageReadError(OSError):
    """An image file that is missing or cannot be decoded; the message names the path."""


def load_image(path: str | os.PathLike, exif_transpose: bool = True) -> Image.Image:
    """Read an image file as RGB (grayscale, RGBA and palette files are converted).

    With ``exif_transpose`` the EXIF orientation tag is applied (photos from phones and
    cameras then come out the way viewers show them; boxes refer to that orientation).
    Raises :class:`ImageReadError` naming the path.
    """
    try:
        with Image.open(path) as image:
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"image {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot read image {str(path)!r}: {err}") from None


def to_image_tensor(image: ImageInput, exif_transpose: bool = True) -> Tensor:
    """A path, PIL image or CHW tensor -> (3, H, W) tensor, uint8 0-255 or float 0-1.

    Tensors: uint8 values 0-255 or floating values in [0, 1], RGB, (3, H, W); a
    (1, H, W) grayscale tensor is repeated to three channels.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, exif_transpose)
    if isinstance(image, Image.Image):
        return F.pil_to_tensor(image.convert("RGB"))
    if not isinstance(image, Tensor):
        raise TypeError(
            f"expected a file path, a PIL image or a (3, H, W) tensor, got {type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image tensors must be (3, H, W) RGB (channels first), got shape {tuple(image.shape)}"
        )
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.is_floating_point():
        lo, hi = float(image.min()), float(image.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float image tensors must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                f"(pass uint8 for 0-255 values; do not normalise: the detector does)"
            )
    elif image.dtype != torch.uint8:
        raise ValueError(f"image tensors must be uint8 (0-255) or float (0-1), got {image.dtype}")
    return image


def preprocess(image: Tensor, size: int = EVAL_SIZE, max_size: int | None = EVAL_MAX_SIZE) -> Tensor:
    """The evaluation transform: (3, h, w) uint8/float image -> normalised float32
    (3, H, W), with (H, W) = ``resize_size((h, w), size, max_size)``.

    Float images (values 0-1) are first rounded to 8 bits: evaluation resizes the uint8
    pixels of image files, and this keeps a float copy of a file's pixels bit-identical
    to the file itself.
    """
    if image.is_floating_point():
        image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    new_hw = resize_size(tuple(image.shape[-2:]), size, max_size)
    if new_hw != tuple(image.shape[-2:]):
        image = F.resize(image, list(new_hw))
    pixels = F.to_dtype(image, torch.float32, scale=True)
    return F.normalize(pixels, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def _as_int_dict(mapping) -> dict[int, object] | None:
    if mapping is None:
        return None
    return {int(k): v for k, v in dict(mapping).items()}


class Detector:
    """A DETR model in eval mode plus its label mapping and pre-processing settings.

    model: a :class:`~detr_irpe.DETR`;  label_to_category_id: model label -> original
    category id (``None``: labels are the ids, as in COCO checkpoints);  category_names:
    original id -> name (``None``: the COCO names when the model has 91 classes, else the
    id as text);  size / max_size: shorter-side target and longer-side cap of the resize.
    """

    def __init__(
        self,
        model: DETR,
        label_to_category_id: dict[int, int] | None = None,
        category_names: dict[int, str] | None = None,
        device: str | torch.device = "cpu",
        size: int = EVAL_SIZE,
        max_size: int | None = EVAL_MAX_SIZE,
        exif_transpose: bool = True,
    ):
        if size < 1 or (max_size is not None and max_size < size):
            raise ValueError(f"size={size}, max_size={max_size}: need 1 <= size <= max_size")
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.model.per_image_backbone = True
        self.postprocess = PostProcess()
        self.size = size
        self.max_size = max_size
        self.exif_transpose = exif_transpose
        mapping = _as_int_dict(label_to_category_id)
        names = _as_int_dict(category_names)
        if mapping is None or all(k == v for k, v in mapping.items()):
            # Labels are the category ids (COCO-layout training): ids without a category
            # keep their number.
            mapping = {label: label for label in range(model.num_classes)}
        missing = sorted(set(range(model.num_classes)) - set(mapping))
        if missing:
            raise ValueError(
                f"label_to_category_id has no entry for model labels {missing[:10]} "
                f"(the model has {model.num_classes} classes)"
            )
        self.label_to_category_id = {k: int(v) for k, v in mapping.items()}
        if names is None and label_to_category_id is None and model.num_classes == COCO_NUM_CLASSES:
            names = dict(COCO_CATEGORY_NAMES)
            self._unknown_name = UNNAMED_COCO_ID
        else:
            self._unknown_name = None
        self.category_names = {k: str(v) for k, v in (names or {}).items()}
        # model label -> original id, as a lookup tensor.
        self._ids = torch.tensor(
            [self.label_to_category_id[label] for label in range(model.num_classes)],
            dtype=torch.int64,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        size: int | None = None,
        max_size: int | None = None,
        trust: bool = False,
        exif_transpose: bool = True,
    ) -> Detector:
        """Build the model a checkpoint describes (ours, official DETR or DETR-with-iRPE),
        load its weights strictly and take the label mapping and names it stores.

        ``size`` / ``max_size`` default to the evaluation resize stored in the checkpoint
        (``val_size`` / ``max_size`` of its run; DETR's 800 / 1333 for files that store
        none), so detections equal the ones its evaluation wrote.  A value that differs
        from the stored one is used and printed as an override."""
        ckpt = load_checkpoint(str(path), trust=trust)
        model, _, _ = build_detr(ckpt.config())
        model.load_state_dict(ckpt.inference_model, strict=True)
        stored = ckpt.eval_sizes()
        chosen = {"size": size, "max_size": max_size}
        for name, key, default in (("size", "val_size", EVAL_SIZE),
                                   ("max_size", "max_size", EVAL_MAX_SIZE)):
            if chosen[name] is None:
                chosen[name] = stored.get(key, default)
            elif key in stored and chosen[name] != stored[key]:
                print(f"note: {name} {chosen[name]} overrides the {key} {stored[key]} that "
                      f"{path} was evaluated with", flush=True)
        return cls(
            model,
            label_to_category_id=ckpt.raw.get("label_to_category_id"),
            category_names=ckpt.raw.get("category_names"),
            device=device,
            exif_transpose=exif_transpose,
            **chosen,
        )

    def category_name(self, category_id: int) -> str:
        name = self.category_names.get(int(category_id))
        if name is None:
            return self._unknown_name or str(int(category_id))
        return name

    @torch.inference_mode()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float = 0.5,
        batch_size: int = 4,
    ) -> dict | list[dict]:
        """Detections for one image or a list of images.

        images: a file path, PIL image or (3, H, W) tensor (uint8 0-255 or float 0-1,
        RGB), a list of them, or a (B, 3, H, W) tensor.  Returns one dict for a single
        image, else a list of dicts, each with

        - ``boxes``:  float32 (n, 4) absolute (x0, y0, x1, y1) in pixels of the original
          image, clipped to it;
        - ``scores``: float32 (n,), sorted descending, all >= ``threshold``;
        - ``labels``: int64 (n,) original category ids;
        - ``names``:  list of n category names.

        Results do not depend on ``batch_size`` (images per forward pass).
        """
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, Tensor) and images.dim() == 4
        )
        items = [images] if single else list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results = []
        for start in range(0, len(items), batch_size):
            chunk = [to_image_tensor(x, self.exif_transpose) for x in items[start : start + batch_size]]
            results.extend(self._predict_tensors(chunk, threshold))
        return results[0] if single else results

    def _predict_tensors(self, images: list[Tensor], threshold: float) -> list[dict]:
        sizes = torch.tensor([list(img.shape[-2:]) for img in images], dtype=torch.int64)
        inputs = [preprocess(img, self.size, self.max_size).to(self.device) for img in images]
        self.model.per_image_backbone = True
        outputs = self.model(inputs)
        outputs = {k: outputs[k].float() for k in ("pred_logits", "pred_boxes")}
        dets = self.postprocess(outputs, sizes.to(self.device))
        return [self._select(d, hw, threshold) for d, hw in zip(dets, sizes.tolist())]

    def _select(self, det: dict, hw: list[int], threshold: float) -> dict:
        scores, labels, boxes = (det[k].cpu() for k in ("scores", "labels", "boxes"))
        keep = scores >= threshold
        scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
        order = torch.argsort(scores, descending=True, stable=True)
        scores, labels, boxes = scores[order], labels[order], boxes[order].clone()
        h, w = hw
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        ids = self._ids[labels]
        return {
            "boxes": boxes,
            "scores": scores,
            "labels": ids,
            "names": [self.category_name(i) for i in ids.tolist()],
        }


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r}: CUDA is not available here; use 'cpu'")
    return device


# ----------------------------------------------------------------------------------------
# Folder-level job (tools/predict.py).


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
    files = sorted(Path(p) for p in glob(text, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"no images matched {text!r} (not a file, folder or matching glob)")
    return files, None


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


def _render_name(stem: str, image_id: int, taken: set[str]) -> str:
    name = f"{stem}.png"
    if name in taken:
        name = f"{stem}_{image_id}.png"
    taken.add(name)
    return name


def predict_to_folder(
    detector: Detector,
    files: Sequence[Path],
    out_dir: str | os.PathLike,
    threshold: float = 0.5,
    batch_size: int = 4,
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

    An unreadable image is skipped with a message (listed in the result) unless
    ``strict``, which raises :class:`ImageReadError`.
    """
    from .visualization import draw_detections, save_png  # rendering only

    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [str(p.relative_to(root)) if root is not None else str(p) for p in files]
    ids = _image_ids_from_coco(coco_json, names) if coco_json else list(range(len(files)))
    run = PredictionRun()
    taken: set[str] = set()
    start = last_report = time.perf_counter()
    done = 0
    for first in range(0, len(files), batch_size):
        batch = []
        for k in range(first, min(first + batch_size, len(files))):
            try:
                batch.append((k, load_image(files[k], detector.exif_transpose)))
            except ImageReadError as err:
                if strict:
                    raise
                log(f"skipped: {err}")
                run.skipped.append((str(files[k]), str(err)))
        if batch:
            tensors = [F.pil_to_tensor(image) for _, image in batch]
            dets = detector.predict(tensors, threshold=threshold, batch_size=len(tensors))
            for (k, image), det, pixels in zip(batch, dets, tensors):
                run.images.append(
                    {"id": ids[k], "file_name": names[k], "width": image.width,
                     "height": image.height}
                )
                run.detections.extend(coco_results(det, ids[k]))
                if render:
                    target = out / _render_name(files[k].stem, ids[k], taken)
                    save_png(draw_detections(pixels, det), target)
                    run.rendered.append(target)
        done = min(first + batch_size, len(files))
        now = time.perf_counter()
        if done == len(files) or first == 0 or now - last_report >= progress_every_s:
            rate = done / max(now - start, 1e-9)
            log(f"predict: {done}/{len(files)} images, {rate:.2f} images/s")
            last_report = now
    run.seconds = time.perf_counter() - start
    write_json(out / "predictions.json", run.detections, indent=None)
    write_json(out / "images.json", run.images, indent=None)
    if run.skipped:
        log(f"{len(run.skipped)} of {len(files)} image(s) could not be read and were skipped")
    log(f"{len(run.detections)} detections on {len(run.images)} image(s) with score >= "
        f"{threshold} -> {out / 'predictions.json'} (image ids: {out / 'images.json'})")
    if render:
        log(f"pictures: {len(run.rendered)} PNG(s) in {out}")
    return run

