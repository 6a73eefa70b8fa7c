"""A trained detector ready to run on images: :class:`Detector` loads a checkpoint,
pre-processes images, runs the model and decodes its outputs into detections.

    detector = Detector.from_checkpoint("output/checkpoint_best.pth")
    dets = detector.predict(["a.jpg", "b.jpg"], threshold=0.5)
    # dets[i]["boxes"]  float32 (n, 4) absolute (x0, y0, x1, y1) pixels of the ORIGINAL image
    # dets[i]["scores"] float32 (n,)   best real-class probability, descending
    # dets[i]["labels"] int64 (n,)     original category ids (not model labels)
    # dets[i]["names"]  list[str]      category names

Pre-processing is the evaluation transform itself (``make_transforms("val")`` and
``to_model_format`` of :mod:`detr_irpe.data.transforms`: shorter side ``size``, longer
side at most ``max_size``; ImageNet mean/std) and the
backbone runs on every image alone (``DETR.per_image_backbone``), so a detection does not
depend on the other images of its batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors

from detr_irpe.checkpoint import load_checkpoint
from detr_irpe.config import EVAL_MAX_SIZE, EVAL_SIZE
from detr_irpe.data.transforms import make_transforms, resizes_to_nothing, to_model_format
from detr_irpe.inference.categories import COCO_CATEGORY_NAMES, COCO_NUM_CLASSES, UNNAMED_COCO_ID
from detr_irpe.inference.image_input import EXIF_TRANSPOSE, ImageInput, ImageReadError, to_image_tensor
from detr_irpe.inference.settings import BATCH_SIZE, THRESHOLD, check_prediction
from detr_irpe.machine.device import available_device
from detr_irpe.models.detr import DETR, PREDICTION_KEYS, PostProcess, build_detr


def preprocess(image: Tensor, size: int, max_size: int | None, multiple: int = 1) -> Tensor:
    """The evaluation transform itself, ``make_transforms("val", ...)`` then
    ``to_model_format``: (3, h, w) uint8/float image -> normalised float32 (3, H, W), with
    (H, W) = ``to_multiple(resize_size((h, w), size, max_size), multiple)``.

    Float images (values 0-1) are first rounded to 8 bits: evaluation resizes the uint8
    pixels of image files, and this keeps a float copy of a file's pixels bit-identical
    to the file itself.
    """
    if image.is_floating_point():
        image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    no_boxes = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY",
                                                  canvas_size=tuple(image.shape[-2:]))}
    evaluation = make_transforms("val", max_size=max_size, val_size=size, size_multiple=multiple)
    pixels, _ = to_model_format(*evaluation(tv_tensors.Image(image), no_boxes))
    return pixels


def _as_int_dict(mapping) -> dict[int, object] | None:
    if mapping is None:
        return None
    return {int(k): v for k, v in dict(mapping).items()}


class Detector:
    """A DETR model in eval mode plus its label mapping and pre-processing settings.

    model: a :class:`~detr_irpe.DETR`;  label_to_category_id: model label -> original
    category id (``None``: labels are the ids, as in COCO checkpoints);  category_names:
    original id -> name (``None``: the COCO names when the model has 91 classes, else the
    id as text);  size / max_size: shorter-side target and longer-side cap of the resize;
    size_multiple: each side then rounded to a multiple of it (``--size_multiple``).
    """

    def __init__(
        self,
        model: DETR,
        label_to_category_id: dict[int, int] | None = None,
        category_names: dict[int, str] | None = None,
        device: str | torch.device = "cpu",
        size: int = EVAL_SIZE,
        max_size: int | None = EVAL_MAX_SIZE,
        exif_transpose: bool = EXIF_TRANSPOSE,
        size_multiple: int = 1,
    ):
        if size < 1 or (max_size is not None and max_size < size):
            raise ValueError(f"size={size}, max_size={max_size}: need 1 <= size <= max_size")
        self.device = available_device(device, "device")
        self.model = model.to(self.device).eval()
        self.model.per_image_backbone = True
        self.postprocess = PostProcess(clip_boxes=True)  # boxes inside the image
        self.size = size
        self.max_size = max_size
        self.size_multiple = size_multiple
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

    def compile(self) -> Detector:
        """Compile the ResNet for inference (:func:`detr_irpe.training.compiled.compile_for_inference`:
        faster convolutions; each new image size compiles once, so it pays off over many
        images of a few sizes).  Returns the detector."""
        from detr_irpe.training.compiled import compile_for_inference

        compile_for_inference(self.model)
        return self

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        size: int | None = None,
        max_size: int | None = None,
        trust: bool = False,
        exif_transpose: bool = EXIF_TRANSPOSE,
    ) -> Detector:
        """Build the model a checkpoint describes (ours, official DETR or DETR-with-iRPE),
        load its weights strictly and take the label mapping and names it stores.

        ``size`` / ``max_size`` default to the evaluation resize stored in the checkpoint
        (``val_size`` / ``max_size`` of its run; DETR's 800 / 1333 for files that store
        none), and so does the rounding of the sides (``size_multiple``; 1 where none is
        stored), so detections equal the ones its evaluation wrote.  A value that differs
        from the stored one is used and printed as an override."""
        ckpt = load_checkpoint(str(path), trust=trust)
        model, _, _ = build_detr(ckpt.config())
        model.load_state_dict(ckpt.inference_model, strict=True)
        stored = ckpt.eval_sizes()
        chosen = {"size": size, "max_size": max_size,
                  "size_multiple": stored.get("size_multiple", 1)}
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
        threshold: float = THRESHOLD,
        batch_size: int = BATCH_SIZE,
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
        check_prediction(threshold, batch_size)
        results = []
        for start in range(0, len(items), batch_size):
            chunk = [self.pixels(x) for x in items[start : start + batch_size]]
            results.extend(self._predict_tensors(chunk, threshold))
        return results[0] if single else results

    def pixels(self, image: ImageInput) -> Tensor:
        """``image`` as the (3, H, W) tensor that :meth:`predict` resizes (see
        :func:`~detr_irpe.inference.image_input.to_image_tensor`).  Raises :class:`ImageReadError`
        naming a file that cannot be read, or an image so elongated that its shorter side
        would be resized to 0 pixels."""
        pixels = to_image_tensor(image, self.exif_transpose)
        h, w = pixels.shape[-2:]
        if resizes_to_nothing((h, w), self.max_size):
            what = f"image {str(image)!r}" if isinstance(image, (str, os.PathLike)) else "an image"
            raise ImageReadError(
                f"{what} of {w}x{h} pixels is too elongated: its shorter side would be resized "
                f"to 0 pixels (max_size {self.max_size}); crop or pad it")
        return pixels

    def _predict_tensors(self, images: list[Tensor], threshold: float) -> list[dict]:
        sizes = torch.tensor([list(img.shape[-2:]) for img in images], dtype=torch.int64)
        inputs = [preprocess(img, self.size, self.max_size, self.size_multiple).to(self.device)
                  for img in images]
        self.model.per_image_backbone = True
        outputs = self.model(inputs)
        outputs = {k: v.float() if torch.is_tensor(v) else v
                   for k, v in outputs.items() if k in PREDICTION_KEYS}
        dets = self.postprocess(outputs, sizes.to(self.device))
        return [self._select(d, threshold) for d in dets]

    def _select(self, det: dict, threshold: float) -> dict:
        scores, labels, boxes = (det[k].cpu() for k in ("scores", "labels", "boxes"))
        keep = scores >= threshold
        scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
        order = torch.argsort(scores, descending=True, stable=True)
        scores, labels, boxes = scores[order], labels[order], boxes[order]
        ids = self._ids[labels]
        return {
            "boxes": boxes,
            "scores": scores,
            "labels": ids,
            "names": [self.category_name(i) for i in ids.tolist()],
        }
