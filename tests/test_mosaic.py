"""The mosaic augmentation: where each image lands, which boxes stay (hand-computed on small
canvases), and the flag's way into the training set."""

import pytest
import torch
from helpers import data_flags, shapes_dataset
from torchvision import tv_tensors

from detr_irpe.config import DataConfig
from detr_irpe.data.mosaic import FILL, mosaic, mosaic_epochs, random_corner
from detr_irpe.data.transforms import to_model_format
from detr_irpe.options import parse_args
from detr_irpe.training.loaders import TrainLoader, read_datasets, set_transforms


def _tile(pixels: torch.Tensor, boxes: list[list[float]], label: int, image_id: int = 0):
    """An (image, target) pair as the dataset's ``load`` gives it; pixels (h, w) uint8."""
    h, w = pixels.shape
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                                format="XYXY", canvas_size=(h, w)),
              "labels": torch.full((len(boxes),), label), "iscrowd": torch.zeros(len(boxes)),
              "area": torch.ones(len(boxes)), "image_id": image_id,
              "orig_size": torch.tensor([h, w])}
    return tv_tensors.Image(pixels.expand(3, h, w).clone()), target


def _solid(value: int, h: int = 8, w: int = 10) -> torch.Tensor:
    return torch.full((h, w), value, dtype=torch.uint8)


def test_four_tiles_meet_at_the_centre_and_boxes_follow_them():
    # 8 x 10 tiles on a 16 x 20 canvas; the window's corner (4, 5) puts the canvas centre
    # (8, 10) at the window's (4, 5).
    tiles = [
        _tile(_solid(10), [[6, 4, 10, 8]], 0, image_id=7),  # whole: (1, 0, 5, 4)
        _tile(_solid(20), [[0, 0, 4, 4], [0, 2, 4, 8]], 1),  # out; 16 of 24 px show
        _tile(_solid(30), [[0, 0, 4, 6], [4, 0, 8, 2]], 2),  # out; 6 of 8 px show
        _tile(_solid(40), [[3, 2, 8, 6]], 3),  # 4 of 20 px show: under a quarter
    ]
    image, target = mosaic(tiles, (4, 5))
    assert image.shape == (3, 8, 10)
    for rows, cols, value in ((slice(0, 4), slice(0, 5), 10), (slice(0, 4), slice(5, 10), 20),
                              (slice(4, 8), slice(0, 5), 30), (slice(4, 8), slice(5, 10), 40)):
        assert (image[:, rows, cols] == value).all()
    assert target["boxes"].tolist() == [[1, 0, 5, 4], [5, 0, 9, 4], [0, 4, 3, 6]]
    assert target["boxes"].canvas_size == (8, 10)
    assert target["labels"].tolist() == [0, 1, 2]
    assert target["area"].tolist() == [16, 16, 6]
    assert target["image_id"] == 7 and target["orig_size"].tolist() == [8, 10]


def test_other_sizes_are_cut_to_their_quadrant_or_leave_the_fill_around_them():
    rows = torch.arange(12, dtype=torch.uint8)[:, None] * 10 + 1  # 12 x 14: row r is 10r + 1
    tiles = [_tile(_solid(10), [], 0),
             _tile(rows.expand(12, 14), [[1, 9, 5, 11]], 1),
             _tile(_solid(30, 3, 6), [], 2),  # 3 x 6: only the top right of its quadrant
             _tile(_solid(40), [], 3)]
    image, target = mosaic(tiles, (4, 5))
    # The larger tile shows its part nearest the centre: its bottom rows 8..11 in the window
    # rows 0..3, its left columns.
    assert image[0, 0:4, 5].tolist() == [81, 91, 101, 111]
    assert target["boxes"].tolist() == [[6, 1, 10, 3]]
    # The small tile: canvas rows 8..10, columns 4..9, i.e. window rows 4..6, columns 0..4.
    assert (image[:, 4:7, 0:5] == 30).all()
    assert (image[:, 7, 0:5] == FILL).all()


def test_the_window_corner_keeps_the_centre_in_its_middle_half():
    torch.manual_seed(0)
    corners = torch.tensor([random_corner(200, 120) for _ in range(400)])
    assert corners[:, 0].min() == 50 and corners[:, 0].max() == 150
    assert corners[:, 1].min() == 30 and corners[:, 1].max() == 90


def test_the_flag_makes_training_items_mosaics(tmp_path):
    root = shapes_dataset(tmp_path, num_train=6, num_val=2, image_size=48)
    args = parse_args([*data_flags(root), "--mosaic", "1", "--output_dir", str(tmp_path / "out")])
    data = DataConfig.from_options(vars(args))
    train, val = read_datasets(data, evaluate_only=False)
    set_transforms(train, val, data)
    assert train.mosaic_probability == 1.0 and val.mosaic_probability == 0.0
    train.transforms = None
    torch.manual_seed(3)
    image, target = train[2]
    torch.manual_seed(3)
    torch.rand(())  # the draw that chose a mosaic
    others = torch.randint(len(train), (3,)).tolist()
    tiles = [train.load(i) for i in [2, *others]]
    expected = to_model_format(*mosaic(tiles, random_corner(*tiles[0][0].shape[-2:])))
    assert torch.equal(image, expected[0])
    assert torch.equal(target["boxes"], expected[1]["boxes"])
    assert target["image_id"] == train.ids[2]
    plain = to_model_format(*train.load(2))[0]
    assert not torch.equal(image, plain)


@pytest.mark.parametrize(("epochs", "until", "expected"),
                         [(24, 0.75, 18), (23, 0.75, 17), (22, 0.75, 16), (10, 1.0, 10), (10, 0.0, 0)])
def test_the_mosaic_keeps_the_first_share_of_the_epochs(epochs, until, expected):
    # 23 * 0.75 = 17.25 -> 17; 22 * 0.75 = 16.5 -> 16 (half to even).
    assert mosaic_epochs(epochs, until) == expected


def test_the_last_epochs_train_on_plain_images(tmp_path):
    root = shapes_dataset(tmp_path, num_train=8, num_val=2, image_size=48)
    args = parse_args([*data_flags(root), "--mosaic", "1", "--mosaic_until", "0.5",
                       "--num_workers", "0", "--output_dir", str(tmp_path / "out")])
    data = DataConfig.from_options(vars(args))
    train, val = read_datasets(data, evaluate_only=False)
    set_transforms(train, val, data)
    train.transforms = None
    loader = TrainLoader(train, 4, data, seed=0, distributed=False, device=torch.device("cpu"))

    def plain_items(epoch: int, epochs: int | None) -> set[bool]:
        return {torch.equal(image, to_model_format(*train.load(train.ids.index(t["image_id"])))[0])
                for images, targets in loader.epoch(epoch, epochs=epochs)
                for image, t in zip(images, targets)}

    # Of 4 planned epochs the first 2 are mosaics only, the last 2 plain images only.
    assert [plain_items(epoch, 4) for epoch in range(4)] == [{False}, {False}, {True}, {True}]
    assert plain_items(3, None) == {False}  # no plan given: the mosaic is back


@pytest.mark.parametrize(("flag", "value"), [("mosaic", -0.1), ("mosaic", 1.5),
                                             ("mosaic_until", -0.5), ("mosaic_until", 1.2)])
def test_shares_outside_0_1_are_refused(flag, value):
    with pytest.raises(ValueError, match=f"--{flag} "):
        DataConfig(**{flag: value})
