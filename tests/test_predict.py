"""Detector API, tools/predict.py, tools/plot_logs.py and tools/visualize_rpe.py on a tiny
model (ResNet-18, hidden 32, 1+1 layers, 5 queries, small images)."""

import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors

import detr_irpe
from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.image_source import SIXTEEN_BIT_MODES
from detr_irpe.data.transforms import make_transforms, to_model_format
from detr_irpe.inference.categories import COCO_CATEGORY_NAMES
from detr_irpe.inference.detector import Detector, preprocess
from detr_irpe.inference.image_input import ImageReadError, to_image_tensor
from detr_irpe.inference.predict import find_images, predict_to_folder
from detr_irpe.pictures.curves import read_log
from detr_irpe.pictures.irpe_tables import irpe_tables, plot_irpe_tables
from tools import plot_logs as plot_logs_tool
from tools import predict as predict_tool
from tools import visualize_rpe as visualize_rpe_tool

TINY = dict(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1,
            dim_feedforward=32, num_queries=5, pretrained_backbone="none")
MAPPING = {0: 7, 1: 42, 2: 99, 3: 5}
NAMES = {7: "cat", 42: "dog", 99: "eel", 5: "ant"}
SIZE, MAX_SIZE = 64, 96
IMAGE_SIZES = [(60, 80), (90, 50), (64, 64)]  # (h, w)


def _tiny_state(seed, **opts):
    torch.manual_seed(seed)
    cfg = detr_irpe.DETRConfig.from_options({**TINY, **opts})
    model, _, _ = detr_irpe.build_detr(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lookup_table" in name:
                p.copy_(torch.randn_like(p))  # zero at init: make them visible
            elif name.startswith("class_embed"):
                p.normal_(0, 1.0)  # spread the scores over a wide range
            else:
                p.add_(torch.randn_like(p) * 0.02)
    return model, cfg


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A tiny model gains nothing from more threads, and one thread does not slow down
    # when other jobs share the cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    model, cfg = _tiny_state(0, num_classes=4, enc_rpe2d="rpe-2.0-product-ctx-1-k")
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(),
                "args": {**cfg.to_dict(), "lr": 1e-4, "epochs": 3},
                "label_to_category_id": MAPPING, "category_names": NAMES, "epoch": 2}, path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for n, (h, w) in enumerate(IMAGE_SIZES):
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        image.save(folder / f"img{n}.png")
    return folder


@pytest.fixture(scope="module")
def detector(ckpt_path):
    return Detector.from_checkpoint(ckpt_path, size=SIZE, max_size=MAX_SIZE)


def _same(a, b, atol=0.0):
    assert a["labels"].tolist() == b["labels"].tolist()
    assert a["names"] == b["names"]
    torch.testing.assert_close(a["scores"], b["scores"], atol=atol, rtol=0)
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=atol * 100, rtol=0)


@pytest.mark.parametrize("n", range(len(IMAGE_SIZES)))
def test_preprocess_is_the_evaluation_transform(image_dir, n):
    pil = Image.open(image_dir / f"img{n}.png").convert("RGB")
    image = TF.to_image(pil)
    target = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY",
                                                canvas_size=image.shape[-2:])}
    expected, _ = to_model_format(*make_transforms("val", max_size=MAX_SIZE, val_size=SIZE)(
        image, target))
    ours = preprocess(to_image_tensor(pil), SIZE, MAX_SIZE)
    assert torch.equal(ours, expected)  # bit for bit
    assert torch.equal(preprocess(to_image_tensor(pil).float() / 255, SIZE, MAX_SIZE), expected)
    if n == 0:
        assert ours.shape == (3, 64, 85)  # 60 x 80 -> shorter side 64, 64 * 80 / 60 truncated


def test_the_detector_rounds_sides_as_its_checkpoints_evaluation_did(tmp_path, image_dir):
    model, cfg = _tiny_state(0, num_classes=4)
    path = tmp_path / "rounded.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(),
                "args": {**cfg.to_dict(), "val_size": SIZE, "max_size": MAX_SIZE,
                         "size_multiple": 16}}, path)
    detector = Detector.from_checkpoint(path)
    assert detector.size_multiple == 16
    pil = Image.open(image_dir / "img0.png").convert("RGB")  # 60 x 80 -> 64 x 85 -> 64 x 80
    assert preprocess(to_image_tensor(pil), SIZE, MAX_SIZE, 16).shape == (3, 64, 80)
    seen = []
    hook = detector.model.backbone[0].register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].tensors.shape[-2:])))
    try:
        detector.predict([pil])
    finally:
        hook.remove()
    assert seen == [(64, 80)]


def test_16_bit_images_reach_the_model_as_the_evaluation_dataset_reads_them(detector, tmp_path):
    """A 16-bit greyscale PNG is scaled to 8 bits, not clipped to white: the detector and the
    folder job give the model the very tensor the evaluation dataset makes of the file."""
    folder = tmp_path / "val"
    folder.mkdir()
    h, w = 40, 56
    ramp = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    Image.fromarray(ramp).save(folder / "deep.png")
    with Image.open(folder / "deep.png") as image:
        assert image.mode in SIXTEEN_BIT_MODES
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "deep.png", "height": h, "width": w}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 10],
                         "area": 200, "iscrowd": 0}],
        "categories": [{"id": 7, "name": "cat"}]}))
    val = CocoDetection(folder, ann_file, make_transforms("val", max_size=MAX_SIZE, val_size=SIZE))
    expected, _ = val[0]
    seen = []
    hook = detector.model.register_forward_pre_hook(lambda module, args: seen.extend(args[0]))
    try:
        detector.predict(folder / "deep.png")
        predict_to_folder(detector, [folder / "deep.png"], tmp_path / "out", log=lambda line: None)
    finally:
        hook.remove()
    assert len(seen) == 2
    for inputs in seen:
        assert torch.equal(inputs, expected)


def test_input_types_agree(detector, image_dir):
    path = image_dir / "img1.png"
    pil = Image.open(path).convert("RGB")
    uint8 = TF.pil_to_tensor(pil)
    from_path = detector.predict(str(path), threshold=0.0)
    assert isinstance(from_path, dict) and len(from_path["scores"]) == TINY["num_queries"]
    _same(from_path, detector.predict(path, threshold=0.0))
    _same(from_path, detector.predict(pil, threshold=0.0))
    _same(from_path, detector.predict([uint8], threshold=0.0)[0])
    _same(from_path, detector.predict(uint8.float() / 255, threshold=0.0))
    _same(from_path, detector.predict(uint8[None], threshold=0.0)[0])  # (B, 3, H, W)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.predict(uint8.float())
    with pytest.raises(ValueError, match="channels first"):
        detector.predict(uint8.permute(1, 2, 0))


def test_labels_are_original_ids_and_match_the_raw_model(detector, image_dir):
    pil = Image.open(image_dir / "img0.png").convert("RGB")
    det = detector.predict(pil, threshold=0.0)
    assert det["labels"].dtype == torch.int64
    assert set(det["labels"].tolist()) <= set(MAPPING.values())
    assert det["names"] == [NAMES[i] for i in det["labels"].tolist()]
    # Reference: the model and PostProcess by hand, labels mapped, sorted by score.
    model = detector.model
    with torch.no_grad():
        out = model([preprocess(TF.pil_to_tensor(pil), SIZE, MAX_SIZE)])
    ref = detr_irpe.PostProcess()(out, torch.tensor([[pil.height, pil.width]]))[0]
    order = ref["scores"].argsort(descending=True)
    torch.testing.assert_close(det["scores"], ref["scores"][order])
    assert det["labels"].tolist() == [MAPPING[int(i)] for i in ref["labels"][order]]
    clipped = ref["boxes"][order].clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, pil.width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, pil.height)
    torch.testing.assert_close(det["boxes"], clipped)


@pytest.mark.parametrize("label", sorted(MAPPING))
def test_every_model_label_maps_to_its_category(detector, image_dir, label):
    model = copy.deepcopy(detector.model)
    with torch.no_grad():  # force every query to predict ``label``
        model.class_embed.weight.zero_()
        model.class_embed.bias.fill_(-5.0)
        model.class_embed.bias[label] = 5.0
        # ... and the box (cx, cy, w, h) = (0.1, 0.9, 0.5, 0.4): it sticks out left and below.
        model.bbox_embed.layers[-1].weight.zero_()
        model.bbox_embed.layers[-1].bias.copy_(torch.logit(torch.tensor([0.1, 0.9, 0.5, 0.4])))
    forced = Detector(model, detector.label_to_category_id, detector.category_names,
                      size=SIZE, max_size=MAX_SIZE)
    det = forced.predict(image_dir / "img0.png", threshold=0.5)
    assert det["labels"].tolist() == [MAPPING[label]] * TINY["num_queries"]
    assert det["names"] == [NAMES[MAPPING[label]]] * TINY["num_queries"]
    h, w = IMAGE_SIZES[0]
    expected = torch.tensor([0.0, 0.7 * h, 0.35 * w, 1.0 * h])  # clipped to the image
    torch.testing.assert_close(det["boxes"], expected.expand(TINY["num_queries"], 4))


def test_boxes_are_absolute_xyxy_inside_the_original_image(detector, image_dir):
    paths = sorted(image_dir.glob("*.png"))
    for (h, w), det in zip(IMAGE_SIZES, detector.predict(paths, threshold=0.0)):
        boxes = det["boxes"]
        assert boxes.shape == (TINY["num_queries"], 4) and boxes.dtype == torch.float32
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert (boxes >= 0).all()
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        # absolute pixels, not normalised: some coordinate is well beyond 1
        assert boxes.max() > 2


def test_threshold_filters_and_sorts(detector, image_dir):
    path = image_dir / "img2.png"
    full = detector.predict(path, threshold=0.0)
    scores = full["scores"]
    assert (scores[:-1] >= scores[1:]).all()
    cut = float(scores.median())
    kept = detector.predict(path, threshold=cut)
    n = int((scores >= cut).sum())
    assert 0 < n < len(scores)
    assert len(kept["scores"]) == n and (kept["scores"] >= cut).all()
    assert kept["labels"].tolist() == full["labels"][:n].tolist()
    assert len(detector.predict(path, threshold=1.0)["scores"]) == 0


def test_batch_size_does_not_change_detections(detector, image_dir):
    paths = sorted(image_dir.glob("*.png"))  # three different sizes: padding differs
    one = detector.predict(paths, threshold=0.0, batch_size=1)
    three = detector.predict(paths, threshold=0.0, batch_size=3)
    assert len(one) == len(three) == 3
    for a, b in zip(one, three):
        _same(a, b, atol=1e-5)


def test_coco_checkpoint_without_mapping_uses_coco_names(tmp_path, image_dir):
    assert len(COCO_CATEGORY_NAMES) == 80 and max(COCO_CATEGORY_NAMES) == 90
    assert COCO_CATEGORY_NAMES[1] == "person" and COCO_CATEGORY_NAMES[90] == "toothbrush"
    assert 12 not in COCO_CATEGORY_NAMES and COCO_CATEGORY_NAMES[13] == "stop sign"
    model, _ = _tiny_state(1, num_classes=91, enc_rpe2d="")
    path = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, path)  # official files: weights (and args) only
    det = Detector.from_checkpoint(path, size=SIZE, max_size=MAX_SIZE).predict(
        image_dir / "img0.png", threshold=0.0)
    for label, name in zip(det["labels"].tolist(), det["names"]):
        assert 0 <= label <= 90
        assert name == COCO_CATEGORY_NAMES.get(label, "N/A")


def test_find_images_and_clear_errors(image_dir, tmp_path):
    files, root = find_images(image_dir)
    assert [f.name for f in files] == ["img0.png", "img1.png", "img2.png"] and root == image_dir
    assert find_images(str(image_dir / "img1*"))[0] == [image_dir / "img1.png"]
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        find_images(str(tmp_path / "nothing_here*.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        to_image_tensor(tmp_path / "broken.jpg")


def _find_images_in_a_thread(spec, seconds=60):
    """find_images(spec), failing the test (not hanging it) when it takes over ``seconds``."""
    found = []
    worker = threading.Thread(target=lambda: found.append(find_images(spec)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert found, f"find_images({spec!r}) did not return within {seconds} s"
    return found[0]


@pytest.mark.parametrize("loops", [1, 2])
def test_a_recursive_glob_lists_each_real_file_once_despite_symlink_loops(tmp_path, loops):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"x")
    (root / "sub" / "b.jpg").write_bytes(b"x")
    (root / "sub" / "again.jpg").symlink_to(root / "a.jpg")  # a second name of a.jpg
    (root / "sub" / "up").symlink_to(root)  # a loop
    if loops == 2:
        (root / "sub" / "up2").symlink_to(root)
    files, folder = _find_images_in_a_thread(f"{root}/**/*.jpg")
    assert folder is None
    assert files == [root / "a.jpg", root / "sub" / "b.jpg"]
    assert _find_images_in_a_thread(f"{root}/**")[0] == files


def test_cli_writes_coco_results_and_renders(ckpt_path, image_dir, detector, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in image_dir.glob("*.png"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    tool = predict_tool
    code = tool.main(["--checkpoint", str(ckpt_path), "--images", str(folder), "--out", str(out),
                      "--threshold", "0.2", "--batch_size", "2", "--device", "cpu",
                      "--size", str(SIZE), "--max_size", str(MAX_SIZE), "--render"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "broken.jpg" in printed and "1 of 4 image(s) could not be read" in printed
    assert "predict: [4/4]" in printed and "images/s" in printed

    images = json.loads((out / "images.json").read_text())
    files = sorted(folder.iterdir())  # broken.jpg is index 0, skipped
    assert [(i["id"], i["file_name"]) for i in images] == [(n, f.name) for n, f in
                                                           enumerate(files) if n > 0]
    assert [(i["height"], i["width"]) for i in images] == IMAGE_SIZES
    gt = COCO()
    gt.dataset = {"images": images, "annotations": [],
                  "categories": [{"id": i, "name": n} for i, n in NAMES.items()]}
    gt.createIndex()
    dt = gt.loadRes(str(out / "predictions.json"))
    assert len(dt.anns) > 0

    preds = json.loads((out / "predictions.json").read_text())
    for info in images:
        api = detector.predict(folder / info["file_name"], threshold=0.2)
        mine = [p for p in preds if p["image_id"] == info["id"]]
        assert [p["category_id"] for p in mine] == api["labels"].tolist()
        assert np.allclose([p["score"] for p in mine], api["scores"].numpy(), atol=1e-6)
        xyxy = np.array([p["bbox"] for p in mine]).reshape(-1, 4)
        xyxy[:, 2:] += xyxy[:, :2]
        assert np.allclose(xyxy, api["boxes"].numpy(), atol=1e-3)
        rendered = Image.open(out / f"{Path(info['file_name']).stem}.png")
        assert rendered.size == (info["width"], info["height"])
    assert not (out / "broken.png").exists()
    # Rendering changed the pixels where there are boxes.
    first = images[0]
    original = np.array(Image.open(folder / first["file_name"]).convert("RGB"))
    drawn = np.array(Image.open(out / f"{Path(first['file_name']).stem}.png").convert("RGB"))
    has_boxes = any(p["image_id"] == first["id"] for p in preds)
    assert (original != drawn).any() == has_boxes


def test_render_never_writes_over_an_input(ckpt_path, image_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "img0.png").write_bytes((image_dir / "img0.png").read_bytes())
    (folder / "img0.jpg").symlink_to(image_dir / "img1.png")  # same stem: drawn as img0_1.png
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code = predict_tool.main(["--checkpoint", str(ckpt_path), "--images", str(folder),
                              "--out", str(folder), "--render", "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "--out" in err and "img0.png" in err and "reads" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # The COCO file the ids come from is an input too.
    coco = tmp_path / "predictions.json"
    coco.write_text(json.dumps({"images": [{"id": 3, "file_name": "img0.png"}]}))
    with pytest.raises(ValueError, match="predictions.json"):
        predict_to_folder(None, [image_dir / "img0.png"], tmp_path, root=image_dir,
                          coco_json=coco)


def test_cli_errors(ckpt_path, image_dir, tmp_path, capsys):
    tool = predict_tool
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    code = tool.main(["--checkpoint", str(ckpt_path), "--images", str(tmp_path / "broken.jpg"),
                      "--out", str(tmp_path / "o"), "--strict", "--size", str(SIZE)])
    assert code == 1 and "broken.jpg" in capsys.readouterr().err
    code = tool.main(["--checkpoint", str(ckpt_path), "--images", str(tmp_path / "none*.jpg"),
                      "--out", str(tmp_path / "o")])
    assert code == 1 and "none*.jpg" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    code = tool.main(["--checkpoint", str(missing), "--images", str(image_dir),
                      "--out", str(tmp_path / "o")])
    assert code == 1 and str(missing) in capsys.readouterr().err


def _log_line(epoch, ap):
    row = {"train_lr": 1e-4, "train_loss": 10.0 - epoch, "train_loss_ce": 1.0 / (epoch + 1),
           "train_loss_bbox": 2.0, "train_loss_giou": 1.5, "train_class_error": 80.0 - epoch,
           "train_loss_ce_unscaled": 1.0, "epoch": epoch, "n_parameters": 123}
    if ap is not None:
        row.update(test_loss=9.0 - epoch, test_loss_ce=1.0, test_loss_bbox=2.1,
                   test_loss_giou=1.6, test_class_error=70.0,
                   test_coco_eval_bbox=[ap, ap * 2] + [0.1] * 10)
    return json.dumps(row)


def test_plot_logs(tmp_path, capsys):
    runs = []
    for name, aps in (("irpe", [None, 0.1, 0.2]), ("plain", [0.05, None, 0.15])):
        run = tmp_path / name
        run.mkdir()
        (run / "log.txt").write_text("\n".join(_log_line(e, ap) for e, ap in enumerate(aps)) + "\n")
        runs.append(str(run))
    assert len(read_log(runs[0])) == 3
    out = tmp_path / "plots" / "curves.png"
    tool = plot_logs_tool
    assert tool.main([*runs, "--out", str(out), "--labels", "iRPE", "DETR"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 300
    assert tool.main([*runs, "--out", str(out), "--labels", "one"]) == 1
    assert "1 labels for 2 runs" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "log.txt").write_text(_log_line(0, 0.1) + "\n{oops\n")
    assert tool.main([str(tmp_path / "bad"), "--out", str(out)]) == 1
    assert "log.txt:2" in capsys.readouterr().err


def test_visualize_rpe_product_ctx(ckpt_path, tmp_path):
    ckpt = detr_irpe.load_checkpoint(str(ckpt_path))
    tables = irpe_tables(ckpt.model, ckpt.config().irpe)
    assert [(t.layer, t.where, t.method, t.mode) for t in tables] == [(0, "k", "product", "ctx")]
    weight = ckpt.model["transformer.encoder.layers.0.self_attn.rpe_k.lookup_table_weight"]
    side = 9  # ratio 2.0: 2 * int(2 * 2.0) + 1
    grid = tables[0].grid()
    assert grid.shape == (1, side, side)
    # bucket r * S + c  <->  grid[r, c]
    r, c = 2, 7
    torch.testing.assert_close(grid[0, r, c], weight[0, :, r * side + c].norm())
    out = tmp_path / "rpe.png"
    assert visualize_rpe_tool.main(["--checkpoint", str(ckpt_path), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200


@pytest.mark.parametrize("spec, n_panels", [("rpe-2.0-product-bias-0-qk", 2 * 2),
                                            ("rpe-1.9-euc-ctx-1-kv", 2),
                                            ("rpe-2.0-cross-ctx-0-k", 2)])
def test_visualize_rpe_other_methods(spec, n_panels, tmp_path):
    model, cfg = _tiny_state(2, num_classes=4, enc_rpe2d=spec)
    ckpt = detr_irpe.Checkpoint(model.state_dict(), cfg.to_dict())
    tables = irpe_tables(ckpt.model, cfg.irpe)
    assert sum(t.heads if t.method == "product" else 1 for t in tables) == n_panels
    if "bias" in spec:
        bias = ckpt.model["transformer.encoder.layers.0.self_attn.rpe_q.lookup_table_bias"]
        torch.testing.assert_close(tables[0].values, bias)
    out = plot_irpe_tables(ckpt, tmp_path / "rpe.png")
    assert out.is_file() and out.stat().st_size > 1000


def test_visualize_rpe_without_irpe_errors(tmp_path, capsys):
    model, cfg = _tiny_state(3, num_classes=4, enc_rpe2d="")
    path = tmp_path / "plain.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    code = visualize_rpe_tool.main(["--checkpoint", str(path), "--out",
                                             str(tmp_path / "rpe.png")])
    err = capsys.readouterr().err
    assert code == 1 and "no iRPE tables" in err and str(path) in err
    assert not (tmp_path / "rpe.png").exists()


def test_labels_scale_with_the_image_and_stay_inside_it():
    from detr_irpe.pictures.detections import detection_style, draw_detections

    small, large = detection_style(128, 125), detection_style(800, 1066)
    assert small[0] <= large[0] and small[1] < large[1]
    assert large[1] / small[1] > 2  # the font follows the image size
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    det = {"boxes": torch.tensor([[70.0, 0.0, 80.0, 10.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([1]), "names": ["a long category name"]}
    drawn = draw_detections(image, det)
    assert drawn.shape == image.shape
    painted = (drawn != 0).any(0)
    # the label of a box in the top-right corner is pulled left into the image, not cut off
    assert painted[:, :40].any()
    assert painted[0].any() and not painted[20:, :60].any()
