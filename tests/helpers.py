"""What many test files share: the tiny model (as build_detr options, as a built model and
as main.py flags), the folder of checked-in fixtures, and the generated shapes set in the
folder layouts main.py reads.

Tests import it as ``helpers`` (tests/ is on sys.path, as for ``reference``)."""

import shutil
import tempfile
from pathlib import Path

import torch

import detr_irpe
from detr_irpe.data.shapes import generate_shapes_dataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = str(HERE / "fixtures")

# The tiny model most tests build: resnet18 without pretrained weights, a 32-wide
# transformer with two heads, one encoder and two decoder layers.  A test that needs
# another size names the difference as an override.
TINY_OPTIONS = dict(backbone="resnet18", pretrained_backbone="none", hidden_dim=32, nheads=2,
                    enc_layers=1, dec_layers=2, dim_feedforward=32)


def tiny_config(**overrides) -> dict:
    """The tiny model's build_detr options with ``overrides`` on top.  An override of None
    leaves that option out (build_detr's default applies)."""
    options = {**TINY_OPTIONS, **overrides}
    return {name: value for name, value in options.items() if value is not None}


def tiny_model(seed: int = 0, **overrides):
    """``build_detr(**tiny_config(**overrides))`` after ``torch.manual_seed(seed)``: the
    (model, criterion, postprocessors) triple."""
    torch.manual_seed(seed)
    return detr_irpe.build_detr(**tiny_config(**overrides))


def tiny_flags(**overrides) -> list[str]:
    """The same options as main.py flags (``--hidden_dim 32`` ...)."""
    return [item for name, value in tiny_config(**overrides).items()
            for item in (f"--{name}", str(value))]


# A short CPU run of the tiny model with iRPE-K through main.py; without data or output
# flags.  ``--threads 2`` stays last so that ``TINY_FLAGS[:-2]`` is the same run with one
# thread per process (torchrun).
TINY_FLAGS = [*tiny_flags(num_queries=6), "--train_scales", "64", "80", "--max_size", "96",
              "--val_size", "64", "--batch_size", "2", "--num_workers", "0", "--device", "cpu",
              "--print_freq", "100", "--lr", "1e-3", "--enc_rpe2d", "rpe-2.0-product-ctx-1-k",
              "--threads", "2"]

# TINY_FLAGS's run options alone, with no model or size flag: for runs that take them from a
# checkpoint.
RUN_ONLY = ["--batch_size", "2", "--num_workers", "0", "--device", "cpu", "--print_freq", "100",
            "--threads", "2"]


def shapes_dataset(root, layout: str = "custom", **generate) -> Path:
    """The generated shapes set (``generate``: generate_shapes_dataset's arguments) under
    ``root``, in one of the layouts main.py reads:

    - 'custom': annotations/instances_{train,val}.json, train/, val/ (``data_flags``);
    - 'coco': COCO 2017's annotations/instances_{train,val}2017.json, {train,val}2017/
      (``--coco_path``), and nothing else.
    """
    root = Path(root)
    if layout == "custom":
        generate_shapes_dataset(root, **generate)
        return root
    if layout != "coco":
        raise ValueError(f"layout={layout!r}: 'custom' or 'coco'")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        generate_shapes_dataset(src, **generate)
        (root / "annotations").mkdir(parents=True)
        for split in ("train", "val"):
            shutil.copy(src / "annotations" / f"instances_{split}.json",
                        root / "annotations" / f"instances_{split}2017.json")
            shutil.copytree(src / split, root / f"{split}2017")
    return root


def data_flags(root) -> list[str]:
    """main.py's four data flags for a 'custom' layout set under ``root``."""
    root = Path(root)
    return ["--train_json", str(root / "annotations" / "instances_train.json"),
            "--train_images", str(root / "train"),
            "--val_json", str(root / "annotations" / "instances_val.json"),
            "--val_images", str(root / "val")]
