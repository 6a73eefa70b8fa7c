"""The images the detector takes, decoded to one format: uint8 RGB (3, H, W) tensors.

A file path is decoded here (:func:`load_image`), a PIL image converted, a tensor checked
(:func:`to_image_tensor`); a file that cannot be read raises :class:`ImageReadError`
naming it.  Files and PIL images go through the data pipeline's own
:func:`~detr_irpe.data.image_source.to_rgb`, so the detector sees the pixels that
evaluation sees.
"""

from __future__ import annotations

import os

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from detr_irpe.data.image_source import to_rgb

# What the detector accepts as one image: a file path, a PIL image or a (3, H, W) tensor.
ImageInput = str | os.PathLike | Image.Image | Tensor
# Files are turned the way their EXIF orientation tag says unless the caller opts out.
EXIF_TRANSPOSE = True


class ImageReadError(OSError):
    """An image file that is missing or cannot be decoded; the message names the path."""


def load_image(path: str | os.PathLike, exif_transpose: bool = EXIF_TRANSPOSE) -> Image.Image:
    """Read an image file as 8-bit RGB, decoded as the data pipeline decodes it
    (:func:`~detr_irpe.data.image_source.to_rgb`: 16-bit files are scaled to 8 bits;
    grayscale, RGBA and palette files are converted).

    With ``exif_transpose`` the EXIF orientation tag is applied (photos from phones and
    cameras then come out the way viewers show them; boxes refer to that orientation).
    Raises :class:`ImageReadError` naming the path.
    """
    try:
        with Image.open(path) as image:
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError(f"image {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {str(path)!r}: {err}") from None


def to_image_tensor(image: ImageInput, exif_transpose: bool = EXIF_TRANSPOSE) -> Tensor:
    """A path, PIL image or CHW tensor -> (3, H, W) tensor, uint8 0-255 or float 0-1.

    Tensors: uint8 values 0-255 or floating values in [0, 1], RGB, (3, H, W); a
    (1, H, W) grayscale tensor is repeated to three channels.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, exif_transpose)
    if isinstance(image, Image.Image):
        return F.pil_to_tensor(to_rgb(image))
    if not isinstance(image, Tensor):
        raise TypeError(
            f"expected a file path, a PIL image or a (3, H, W) tensor, got {type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image tensors must be (3, H, W) RGB (channels first), got shape {tuple(image.shape)}"
        )
    if 0 in image.shape:
        raise ValueError(f"image tensors must hold at least one pixel, got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.is_floating_point():
        if not torch.isfinite(image).all():
            raise ValueError("float image tensors must be finite, got NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float image tensors must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                f"(pass uint8 for 0-255 values; do not normalise: the detector does)"
            )
    elif image.dtype != torch.uint8:
        raise ValueError(f"image tensors must be uint8 (0-255) or float (0-1), got {image.dtype}")
    return image
