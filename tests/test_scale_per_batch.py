"""--scale_per_batch: one training scale per batch, drawn reproducibly by the sampler."""

import torch
from torchvision import tv_tensors

from detr_irpe.config import DataConfig
from detr_irpe.data import CocoDetection, make_transforms
from detr_irpe.data.batch_scale import using_scale
from detr_irpe.data.transforms import RandomResize
from detr_irpe.training.loaders import TrainLoader
from tests.helpers import shapes_dataset

SCALES = [40, 56, 72]


def _image(h: int, w: int):
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 10.0, 30.0, 20.0]]), format="XYXY",
                                     canvas_size=(h, w))
    return tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)), {"boxes": boxes}


def test_per_batch_resize_takes_the_batch_scale_and_others_ignore_it():
    image, target = _image(100, 50)
    follows, ignores = RandomResize([20, 40, 60], per_batch=True), RandomResize([20, 40, 60])
    with using_scale(1):
        assert follows(image, target)[0].shape[-2:] == (80, 40)
        assert follows(image, target)[1]["boxes"].tolist() == [[8.0, 8.0, 24.0, 16.0]]
    with using_scale(5):  # taken modulo the number of sizes: 5 -> 60
        assert follows(image, target)[0].shape[-2:] == (120, 60)
    torch.manual_seed(0)
    with using_scale(1):
        drawn = {ignores(image, target)[0].shape[-1] for _ in range(30)}
    assert drawn == {20, 40, 60}


def _loader(tmp_path, per_batch: bool) -> TrainLoader:
    root = shapes_dataset(tmp_path / "shapes", num_train=24, num_val=2, image_size=64)
    data = DataConfig(train_scales=SCALES, max_size=200, num_workers=0,
                      scale_per_batch=per_batch)
    train = CocoDetection(root / "train", root / "annotations" / "instances_train.json",
                          make_transforms("train", scales=SCALES, max_size=200), train=True,
                          contiguous_labels=True)
    return TrainLoader(train, 4, data, seed=3, distributed=False, device=torch.device("cpu"))


def _shorter_sides(loader) -> list[set[int]]:
    return [{min(image.shape[-2:]) for image in images} for images, _ in loader]


def test_images_of_a_batch_share_their_shorter_side(tmp_path):
    batches = _shorter_sides(_loader(tmp_path, per_batch=True).epoch(0))
    assert all(len(sides) == 1 for sides in batches)
    assert len(set().union(*batches)) > 1  # the scale changes from batch to batch
    # Without the option the same images come at mixed scales within a batch.
    assert any(len(s) > 1 for s in _shorter_sides(_loader(tmp_path, per_batch=False).epoch(0)))


def test_scales_repeat_per_epoch_and_after_skipping_batches(tmp_path):
    loader = _loader(tmp_path, per_batch=True)
    loader.epoch(2)
    whole = list(loader.batches)
    loader.epoch(5)
    other = list(loader.batches)
    loader.epoch(2, skip=2)
    assert list(loader.batches) == whole[2:]
    loader.epoch(2, skip=1, stop=4)  # a shortened last epoch, resumed after its first batch
    assert list(loader.batches) == whole[1:4] and len(loader.loader) == 3
    assert [s for b in whole for _, s in b] != [s for b in other for _, s in b]
    assert all(len({s for _, s in batch}) == 1 for batch in whole)
