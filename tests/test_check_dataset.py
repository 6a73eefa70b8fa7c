"""The dataset checker (detr_irpe.data.checker.checks), path safety and RGB loading of odd images.

Each test writes a small clean dataset (6 RGB PNGs of 40x32, one box each), gives it one
defect and checks how the defect is reported, and that loading does what the report says.
The defects that only need a report, a tool exit code and a loading outcome are the rows of
``CASES``; the tests after it check what a row cannot say.
"""

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from detr_irpe.data import CocoDetection, DatasetError, check_dataset
from detr_irpe.data.image_source import (
    FolderImageSource,
    UnsafeFileNameError,
    ZipImageSource,
    to_rgb,
)
from tools import check_dataset as check_dataset_tool

W, H = 40, 32


def _pixels(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def dataset(tmp_path):
    """``(images_dir, data, write)``: ``write()`` saves ``data`` and returns the JSON path."""
    images = tmp_path / "images"
    images.mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for i in range(1, 7):
        Image.fromarray(_pixels(i)).save(images / f"img{i}.png")
        data["images"].append({"id": i, "file_name": f"img{i}.png", "width": W, "height": H})
        data["annotations"].append(
            {"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [4, 4, 10, 8],
             "area": 80, "iscrowd": 0}
        )
    ann_file = tmp_path / "train.json"

    def write():
        ann_file.write_text(json.dumps(data))
        return ann_file

    return images, data, write


def _codes(issues):
    return {issue.code: issue.count for issue in issues}


def _line(report, code):
    (issue,) = [i for i in report.errors + report.skipped + report.repairs + report.info if i.code == code]
    return issue.line()


def _zip(images, archive, extra=(), top="train/"):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(images.iterdir()):
            zf.write(path, top + path.name)
        for name, payload in extra:
            zf.writestr(name, payload)
    return archive


def test_clean_dataset_has_nothing_to_report(dataset):
    images, _, write = dataset
    for quick in (False, True):
        report = check_dataset(write(), images, quick=quick)
        assert report.ok and report.errors == [] and report.repairs == [] and report.skipped == []
        assert report.repair_line() == ""
        assert report.headers_read == 6
        assert report.summary().splitlines()[-1] == "RESULT: OK"
        report.raise_if_errors()


# ----------------------------------------------------------------------------- one defect each


def _folder(images, tmp_path):
    return images


def _zipped(images, tmp_path):
    return _zip(images, tmp_path / "images.zip")


def _damaged_zip(images, tmp_path):
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"PK\x03\x04 cut short")
    return archive


def _set(entries, index, **values):
    """A defect that sets ``values`` in ``data[entries][index]``."""
    return lambda images, data: data[entries][index].update(values)


def _remove(entries, index, *keys):
    """A defect that deletes ``keys`` from ``data[entries][index]``."""
    return lambda images, data: [data[entries][index].pop(key) for key in keys]


def _both(*defects):
    return lambda images, data: [defect(images, data) for defect in defects]


def _not_an_image(images, data):
    (images / "img5.png").write_bytes(b"<html>404 Not Found</html>")


def _rotated_view(images, data):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_pixels(3)).save(images / "photo.jpg", exif=exif)
    data["images"][2].update(file_name="photo.jpg", width=H, height=W)


def _strip_image(images, data):
    """img1.png becomes 3000 x 1 pixels (JSON and file agree; its box fits)."""
    Image.fromarray(np.zeros((1, 3000, 3), dtype=np.uint8)).save(images / "img1.png")
    data["images"][0].update(width=3000, height=1)
    data["annotations"][0].update(bbox=[4, 0, 10, 1], area=10)


def _crowds_and_an_image_without_annotations(images, data):
    data["annotations"][0]["iscrowd"] = 1
    data["annotations"][1]["iscrowd"] = 1
    del data["annotations"][5]


@dataclass
class Case:
    """A clean dataset with one defect, and how it must be reported.

    ``errors``, ``repairs`` and ``info``: the codes and counts of the report's sections (the
    quick check's own notes aside); ``lines``: text that the line of each code contains;
    ``summary``: text in the whole report; ``repair_line``: the exact line printed at load.
    Text may name ``{ann_file}`` and ``{source}`` (the image folder or zip). ``exit_code``
    is that of ``tools/check_dataset.py``; when it is 1, loading raises ``load_error``
    (its message matching ``load_match``).
    """

    defect: Callable = lambda images, data: None
    errors: dict = field(default_factory=dict)
    repairs: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    summary: tuple = ()
    repair_line: str = ""
    exit_code: int = 1
    load_error: type = DatasetError
    load_match: str | None = None
    damage_json: Callable | None = None  # applied to the written JSON text
    quick: tuple = (False,)  # check_dataset's quick values to test
    sources: tuple = (_folder,)


CASES = {
    # ---- errors in the JSON
    "malformed_json": Case(
        damage_json=lambda text: text[:70],  # cut short, as by an interrupted copy
        errors={"json_malformed": 1},
        lines={"json_malformed": ["line 1 column"]},
        summary=("{ann_file}",),
        load_match="not valid JSON",
    ),
    "missing_top_level_key": Case(
        defect=lambda images, data: data.pop("categories"),
        errors={"missing_top_key": 1},
        lines={"missing_top_key": ["'categories'"]},
        load_match="categories",
    ),
    "missing_item_keys": Case(
        defect=_both(_remove("images", 2, "width"), _remove("annotations", 4, "bbox")),
        errors={"image_missing_key": 1, "annotation_missing_key": 1},
        info={"no_annotations": 1},  # image 5, whose annotation is not valid
        lines={
            "image_missing_key": ["images[2] (id 3): no width"],
            "annotation_missing_key": ["(id 105): no bbox"],
        },
    ),
    "duplicate_image_id": Case(
        # img5.png claims image 2's id
        defect=_both(_set("images", 4, id=2), _set("annotations", 4, image_id=2)),
        errors={"duplicate_image_id": 1},
        lines={"duplicate_image_id": ["image 2 ('img2.png' and 'img5.png')"]},
    ),
    "duplicate_annotation_id": Case(
        defect=_set("annotations", 3, id=102),
        errors={"duplicate_annotation_id": 1},
        lines={"duplicate_annotation_id": ["annotation 102 (image 4)"]},
    ),
    "annotation_of_missing_image": Case(
        defect=_set("annotations", 0, image_id=99),
        errors={"annotation_missing_image": 1},
        info={"no_annotations": 1},
        lines={"annotation_missing_image": ["annotation 101 (image 99)"]},
    ),
    "unknown_category": Case(
        defect=_set("annotations", 2, category_id=42),
        errors={"annotation_unknown_category": 1},
        lines={"annotation_unknown_category": ["annotation 103 (image 3): category 42"]},
        load_match="category 42",
    ),
    **{
        f"bad_bbox_{name}": Case(
            defect=_set("annotations", 1, bbox=bbox),
            errors={"bad_bbox": 1},
            lines={"bad_bbox": ["annotation 102 (image 2): bbox"]},
        )
        for name, bbox in [
            ("nan", [float("nan"), 1, 2, 3]),
            ("inf", [1, 2, float("inf"), 3]),
            ("three_numbers", [1, 2, 3]),
            ("string", "1,2,3,4"),
        ]
    },
    **{
        f"bad_area_{name}": Case(
            defect=_set("annotations", 1, area=area),
            errors={"bad_area": 1},
            lines={"bad_area": [f"annotation 102 (image 2): area {text}"]},
        )
        for name, area, text in [("nan", float("nan"), "nan"), ("negative", -5, "-5"),
                                 ("string", "80", "'80'")]
    },
    "image_too_elongated": Case(
        defect=_strip_image,
        errors={"image_too_elongated": 1},
        lines={"image_too_elongated": ["image 1 'img1.png': 3000x1 (width x height), "
                                       "max_size 1333"]},
        load_match="too elongated",
    ),
    # ---- errors in the image files
    "wrong_size_in_json": Case(
        defect=_set("images", 0, width=50),
        errors={"size_mismatch": 1},
        lines={"size_mismatch": ["image 1 'img1.png': file 40x32, JSON 50x32"]},
        quick=(True,),
    ),
    "rotated_view_in_json": Case(
        defect=_rotated_view,
        errors={"size_mismatch": 1},
        info={"exif_rotated": 1},
        lines={"size_mismatch": ["EXIF-rotated view"]},
    ),
    "missing_file": Case(
        defect=lambda images, data: (images / "img3.png").unlink(),
        errors={"image_missing": 1},
        lines={"image_missing": ["image 3 'img3.png'", "{source}"]},
        load_match="img3.png",
        quick=(False, True),
    ),
    "not_an_image": Case(
        defect=_not_an_image,
        errors={"image_not_an_image": 1},
        lines={"image_not_an_image": ["image 5 'img5.png'"]},
        quick=(False, True),
        sources=(_folder, _zipped),
    ),
    "damaged_zip": Case(
        errors={"images_unreadable": 1},
        lines={"images_unreadable": ["image zip {source} cannot be read"]},
        load_error=zipfile.BadZipFile,
        load_match="unzip -t",
        sources=(_damaged_zip,),
    ),
    # ---- repairs
    "empty_boxes": Case(
        defect=_both(_set("annotations", 0, bbox=[1, 1, 0, 5]), _set("annotations", 1, bbox=[1, 1, 5, -2])),
        repairs={"box_empty": 2},
        lines={"box_empty": ["annotation 101 (image 1)", "annotation 102 (image 2)"]},
        repair_line="{ann_file}: repaired 2 empty boxes dropped",
        exit_code=0,
    ),
    "boxes_outside": Case(
        defect=_both(
            _set("annotations", 0, bbox=[30, 20, 20, 20]),  # partly outside: clipped
            _set("annotations", 1, bbox=[-5, 3, 10, 10]),  # partly outside: clipped
            _set("annotations", 2, bbox=[50, 5, 5, 5]),  # entirely outside: dropped
        ),
        repairs={"box_clipped": 2, "box_outside": 1},
        lines={
            "box_clipped": ["annotation 101 (image 1) bbox [30, 20, 20, 20]"],
            "box_outside": ["annotation 103 (image 3)"],
        },
        repair_line="{ann_file}: repaired 2 boxes clipped to the image, "
        "1 box entirely outside the image dropped",
        exit_code=0,
    ),
    # ---- information
    "crowd_and_images_without_annotations": Case(
        defect=_crowds_and_an_image_without_annotations,
        info={"crowd": 2, "no_annotations": 1},
        lines={
            "crowd": ["annotation 101 (image 1), annotation 102 (image 2)"],
            "no_annotations": ["image 6 'img6.png'"],
        },
        exit_code=0,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_one_defect_is_reported(dataset, tmp_path, capsys, case):
    images, data, write = dataset
    case.defect(images, data)
    ann_file = write()
    if case.damage_json is not None:
        ann_file.write_text(case.damage_json(ann_file.read_text()))
    tool = check_dataset_tool
    for make_source in case.sources:
        source = make_source(images, tmp_path)
        names = {"ann_file": ann_file, "source": source}
        for quick in case.quick:
            report = check_dataset(ann_file, source, quick=quick)
            assert _codes(report.errors) == case.errors
            assert _codes(report.repairs) == case.repairs
            assert _codes(i for i in report.info if not i.code.startswith("quick_")) == case.info
            for code, texts in case.lines.items():
                for text in texts:
                    assert text.format(**names) in _line(report, code)
            for text in case.summary:
                assert text.format(**names) in report.summary()
            assert report.repair_line() == case.repair_line.format(**names)
            assert report.ok == (case.exit_code == 0)

        capsys.readouterr()
        assert tool.main(["--json", str(ann_file), "--images", str(source)]) == case.exit_code
        assert capsys.readouterr().out == check_dataset(ann_file, source).summary() + "\n"
        if case.exit_code:
            with pytest.raises(case.load_error, match=case.load_match):
                CocoDetection(source, ann_file)
        else:
            loaded = CocoDetection(source, ann_file)
            assert loaded.report.repair_line() == case.repair_line.format(**names)


# ----------------------------------------------------------------------------- errors


def test_examples_are_limited_to_five(dataset):
    images, data, write = dataset
    for ann in data["annotations"]:
        ann["bbox"] = [1, 2, float("nan"), 3]
    (issue,) = check_dataset(write(), images).errors
    assert issue.count == 6 and len(issue.examples) == 5
    assert "annotation 105" in issue.line() and "annotation 106" not in issue.line()
    assert issue.line().count(", ...") == 1


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../img1.png"])
def test_file_name_escaping_the_image_folder(dataset, tmp_path, name):
    images, data, write = dataset
    data["images"][3]["file_name"] = name
    # The zip even holds a member of that name: it must not be read either.
    archive = _zip(images, tmp_path / "images.zip", extra=[(name, b"secret")], top="")
    with zipfile.ZipFile(archive) as zf:
        assert name in zf.namelist()
    for source in (images, archive):
        report = check_dataset(write(), source)
        assert _codes(report.errors) == {"unsafe_file_name": 1}
        assert f"image 4 {name!r}" in _line(report, "unsafe_file_name")
        with pytest.raises(DatasetError, match=r"absolute or leaves the image directory: image 4"):
            CocoDetection(source, write())
    with pytest.raises(UnsafeFileNameError, match=rf"{name!r}.*{images}"):
        FolderImageSource(images).open(name)
    with pytest.raises(UnsafeFileNameError, match=rf"{name!r}.*images.zip"):
        ZipImageSource(archive).open(name)


def test_safe_relative_names_still_open(dataset):
    images, _, _ = dataset
    (images / "sub").mkdir()
    Image.fromarray(_pixels(0)).save(images / "sub" / "x.png")
    source = FolderImageSource(images)
    assert source.open("./sub/../sub/x.png").size == (W, H)
    assert source.open("sub//x.png").size == (W, H)


# ----------------------------------------------------------------------------- image files


def test_skip_unreadable_drops_the_image_and_reports_it(dataset, capsys):
    images, _, write = dataset
    (images / "img3.png").unlink()
    report = check_dataset(write(), images, skip_unreadable=True)
    assert report.ok and report.skipped_image_ids == [3] and report.skipped_annotations == 1
    assert "image 3 'img3.png'" in _line(report, "image_missing")
    assert "skipped 1 unreadable image (ids 3) with 1 annotation" in report.repair_line()

    capsys.readouterr()
    loaded = CocoDetection(images, write(), skip_unreadable=True)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [loaded.report.repair_line()] and "skipped 1 unreadable image" in printed[0]
    assert loaded.ids == [1, 2, 4, 5, 6] and len(loaded) == 5
    assert [loaded[i][1]["image_id"] for i in range(len(loaded))] == [1, 2, 4, 5, 6]


def test_every_image_skipped_is_an_error(dataset):
    images, data, write = dataset
    data["images"] = data["images"][:1]
    data["annotations"] = data["annotations"][:1]
    (images / "img1.png").unlink()
    with pytest.raises(DatasetError, match="every image was skipped"):
        CocoDetection(images, write(), skip_unreadable=True)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(dataset, fmt):
    images, data, write = dataset
    name = "img2." + fmt.lower()
    Image.fromarray(_pixels(2)).save(images / name, fmt)
    (images / name).write_bytes((images / name).read_bytes()[: (images / name).stat().st_size // 2])
    data["images"][1]["file_name"] = name
    report = check_dataset(write(), images)
    assert _codes(report.errors) == {"image_truncated": 1}
    assert f"image 2 {name!r} (image file is truncated" in _line(report, "image_truncated")
    # The quick check reads the header only and cannot see it; loading names the file.
    assert check_dataset(write(), images, quick=True).ok
    with pytest.raises(OSError, match=rf"cannot decode image {name!r}"):
        CocoDetection(images, write())[1]
    skipped = check_dataset(write(), images, skip_unreadable=True)
    assert skipped.ok and skipped.skipped_image_ids == [2]


def test_zip_source_reports_like_the_folder(dataset, tmp_path):
    images, data, write = dataset
    data["annotations"][0]["bbox"] = [30, 20, 20, 20]
    Image.fromarray(_pixels(4)).convert("L").save(images / "img4.png")
    (images / "img6.png").unlink()
    archive = _zip(images, tmp_path / "images.zip")
    from_folder = check_dataset(write(), images)
    from_zip = check_dataset(write(), archive)
    assert _codes(from_zip.errors) == _codes(from_folder.errors) == {"image_missing": 1}
    assert _codes(from_zip.repairs) == _codes(from_folder.repairs)
    assert _codes(from_zip.repairs) == {"box_clipped": 1, "converted_grayscale": 1}
    assert str(archive) in _line(from_zip, "image_missing")


def test_quick_mode_samples_headers_but_checks_every_file_exists(dataset):
    images, _, write = dataset
    (images / "img6.png").unlink()
    report = check_dataset(write(), images, quick=True, max_headers=2)
    assert report.headers_read == 2
    assert _codes(report.errors) == {"image_missing": 1}
    assert "sample of 2 of 6 images" in report.summary()


# ----------------------------------------------------------------------------- repairs


def _save_mode(images, name, mode):
    rgb = Image.fromarray(_pixels(7))
    if mode == "I;16":
        gradient = np.linspace(0, 65535, W * H).reshape(H, W).astype(np.uint16)
        Image.fromarray(gradient).save(images / name)
    else:
        rgb.convert(mode).save(images / name)


COLOUR_MODES = [
    ("L", "img1.png", "converted_grayscale"),
    ("P", "img2.png", "converted_palette"),
    ("RGBA", "img3.png", "converted_RGBA"),
    ("CMYK", "img4.jpg", "converted_CMYK"),
    ("I;16", "img5.png", "converted_16-bit"),
]


def test_colour_modes_load_as_rgb_and_are_counted(dataset):
    images, data, write = dataset
    for index, (mode, name, _) in enumerate(COLOUR_MODES):
        _save_mode(images, name, mode)
        data["images"][index]["file_name"] = name
        with Image.open(images / name) as image:
            assert image.mode == mode
    report = check_dataset(write(), images)
    assert report.ok
    assert _codes(report.repairs) == {code: 1 for *_, code in COLOUR_MODES}
    assert "image 5 'img5.png'" in _line(report, "converted_16-bit")
    assert "1 16-bit image converted to 8-bit RGB" in report.repair_line()
    assert "1 CMYK image converted to RGB" in report.repair_line()
    loaded = CocoDetection(images, write(), check=False)
    for index in range(len(COLOUR_MODES)):
        image = loaded.source.open(data["images"][index]["file_name"])
        assert image.mode == "RGB" and image.size == (W, H)
        assert loaded[index][0].shape == (3, H, W)


def test_sixteen_bit_is_scaled_not_saturated(dataset):
    images, _, _ = dataset
    values = np.array([[0, 257, 257 * 100, 32767, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(images / "deep.png")
    with Image.open(images / "deep.png") as image:
        assert image.mode == "I;16"
    rgb = np.asarray(FolderImageSource(images).open("deep.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 100, 127, 255]
    assert (rgb == rgb[..., :1]).all()  # gray
    # Pillow's own conversion clips instead: everything from 255 up turns white.
    assert np.asarray(Image.fromarray(values).convert("RGB"))[0, :, 0].tolist() == [0, 255, 255, 255, 255]
    # 32-bit "I" images are read on the same 16-bit scale.
    as_int32 = to_rgb(Image.fromarray(values.astype(np.int32)))
    assert np.asarray(as_int32)[0, :, 0].tolist() == [0, 1, 100, 127, 255]


@pytest.mark.parametrize("train", [False, True])
def test_report_counts_match_what_loading_does(dataset, train):
    images, data, write = dataset
    anns = data["annotations"]
    anns[0]["bbox"] = [30, 20, 20, 20]  # clipped
    anns[1]["bbox"] = [10, 10, 0, 5]  # empty
    anns[2]["bbox"] = [45, 5, 5, 5]  # outside
    anns.append({"id": 201, "image_id": 4, "category_id": 1, "bbox": [-3, -3, 10, 10], "iscrowd": 1})
    anns.append({"id": 202, "image_id": 4, "category_id": 2, "bbox": [1, 1, 39, 31], "iscrowd": 0})
    anns.append({"id": 203, "image_id": 5, "category_id": 2, "bbox": [39.5, 1, 0.4, 1]})  # inside
    anns.append({"id": 204, "image_id": 5, "category_id": 2, "bbox": [39.9, 1, 0.2, 1]})  # clipped
    anns.append({"id": 205, "image_id": 6, "category_id": 2, "bbox": [1, 1, -4, 4]})  # empty
    _save_mode(images, "img2.png", "L")
    _save_mode(images, "img6.png", "P")
    ann_file = write()

    loaded = CocoDetection(images, ann_file, train=train)
    report = loaded.report
    clipped = dropped = converted = 0
    for index, image_id in enumerate(loaded.ids):
        kept = [
            a for a in anns if a["image_id"] == image_id and not (train and a.get("iscrowd"))
        ]
        _, target = loaded[index]
        h, w = target["size"].tolist()
        cx, cy, bw, bh = (target["boxes"] * torch.tensor([w, h, w, h])).unbind(-1)
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        dropped += len(kept) - len(boxes)
        inputs = torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4)
        inputs[:, 2:] += inputs[:, :2]
        survivors = [b for b in inputs if b[2] > b[0] and b[3] > b[1] and b[0] < w and b[1] < h]
        assert len(survivors) == len(boxes)
        clipped += sum(not torch.allclose(b, o, atol=1e-4) for b, o in zip(boxes, survivors))
        with Image.open(images / f"img{image_id}.png") as image:
            converted += image.mode != "RGB"

    assert report.count("box_clipped") == clipped == (2 if train else 3)
    assert report.count("box_empty") + report.count("box_outside") == dropped == 3
    assert report.count("converted_grayscale") + report.count("converted_palette") == converted == 2


def test_repair_line_is_printed_once_at_load(dataset, capsys):
    images, data, write = dataset
    data["annotations"][0]["bbox"] = [30, 20, 20, 20]
    capsys.readouterr()
    loaded = CocoDetection(images, write())
    out = capsys.readouterr().out
    assert out == f"{write()}: repaired 1 box clipped to the image\n"
    for index in range(len(loaded)):
        loaded[index]
    assert capsys.readouterr().out == ""
    CocoDetection(images, write(), check=False)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- information


def test_exif_rotated_photo_is_counted_and_not_rotated(dataset):
    images, data, write = dataset
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(_pixels(3)).save(images / "photo.jpg", exif=exif, quality=95)
    data["images"][2]["file_name"] = "photo.jpg"
    report = check_dataset(write(), images)
    assert report.ok and report.count("exif_rotated") == 1
    line = _line(report, "exif_rotated")
    assert "image 3 'photo.jpg' (orientation 6)" in line and "NOT rotated" in line

    loaded = CocoDetection(images, write())
    image, target = loaded[2]
    assert image.shape == (3, H, W) and target["orig_size"].tolist() == [H, W]
    stored = np.asarray(Image.open(images / "photo.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(loaded.source.open("photo.jpg")), stored)
    assert ImageOps.exif_transpose(Image.open(images / "photo.jpg")).size == (H, W)  # would rotate


# ----------------------------------------------------------------------------- the tool


def test_tool_exit_codes(dataset, capsys):
    images, data, write = dataset
    tool = check_dataset_tool
    args = ["--json", str(write()), "--images", str(images)]
    assert tool.main(args) == 0
    assert capsys.readouterr().out.rstrip().endswith("RESULT: OK")

    data["annotations"][0]["image_id"] = 99
    assert tool.main(["--json", str(write()), "--images", str(images), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "ERRORS" in out and "annotation 101 (image 99)" in out and "quick check" in out

    data["annotations"][0]["image_id"] = 1
    write()
    (images / "img2.png").unlink()
    assert tool.main(args) == 1
    assert "image 2 'img2.png'" in capsys.readouterr().out
    assert tool.main(args + ["--skip_unreadable"]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "skipped 1 unreadable image (ids 2)" in out
