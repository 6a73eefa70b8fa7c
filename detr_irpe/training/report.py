"""The end of a training run: its two pictures and a short summary.

``<output_dir>/curves.png``: losses and box AP per epoch (:func:`plot_logs`);
``<output_dir>/predictions/<image>.png``: the first validation images with the best
checkpoint's detections (boxes and "name score" labels) drawn on them.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.transforms.v2 import functional as F

from detr_irpe.data import CocoDetection
from detr_irpe.inference.detector import Detector
from detr_irpe.inference.settings import THRESHOLD
from detr_irpe.pictures.curves import plot_logs
from detr_irpe.pictures.detections import draw_detections, save_png

PICTURES = 8  # validation images drawn with their detections
MIN_SIDE = 384  # smaller images are enlarged (whole times) before drawing, to be legible


def render_predictions(checkpoint: Path, val: CocoDetection, out_dir: Path,
                       count: int = PICTURES) -> list[Path]:
    """Draw the detections of ``checkpoint`` on the first ``count`` images of ``val``."""
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image_id in val.ids[:count]:
        name = val.coco.imgs[image_id]["file_name"]
        pixels = F.pil_to_tensor(val.source.open(name))
        detections = detector.predict(pixels, threshold=THRESHOLD)
        zoom = max(1, MIN_SIDE // min(pixels.shape[-2:]))
        pixels = F.resize(pixels, [pixels.shape[-2] * zoom, pixels.shape[-1] * zoom])
        detections = {**detections, "boxes": detections["boxes"] * zoom}
        path = out_dir / f"{Path(name).stem}.png"
        save_png(draw_detections(pixels, detections), path)
        written.append(path)
    return written


def finish_report(output_dir: Path, val: CocoDetection, seconds: float,
                  last_ap: float | None, best_ap: float) -> str:
    """Write the two pictures and return the summary lines."""
    best = output_dir / "checkpoint_best.pth"
    checkpoint = best if best.is_file() else output_dir / "checkpoint.pth"
    curves = plot_logs([output_dir], output_dir / "curves.png")
    pictures = render_predictions(checkpoint, val, output_dir / "predictions")
    final = f"{last_ap:.3f}" if last_ap is not None else "not evaluated"
    return "\n".join([
        "=" * 72,
        f"trained in {seconds / 60:.1f} min: box AP@[.5:.95] {final} at the last evaluation "
        f"(best {best_ap:.3f})",
        f"checkpoint: {checkpoint} (plain DETR state dict under 'model'; see also "
        f"{output_dir / 'checkpoint.pth'}, log.txt, eval/)",
        f"curves:     {curves} (loss and AP per epoch)",
        f"pictures:   {len(pictures)} validation images with detections (score >= "
        f"{THRESHOLD}) in {output_dir / 'predictions'}",
        f"predict on your own images: python tools/predict.py --checkpoint {checkpoint} "
        f"--images DIR --out DIR --render",
        "=" * 72,
    ])
