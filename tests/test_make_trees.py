"""The tree-crown set builder on a small fake wheel: tiling, the half-inside rule, clipping,
unique ids, and that no scene but the listed ones is read (the source's held-out scene
is among the others)."""

import io
import json
import zipfile

from PIL import Image

from tools import make_trees_dataset as trees


def _voc(boxes) -> str:
    objects = "".join(f"<object><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                      f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    return f"<annotation>{objects}</annotation>"


def _png(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


class WatchedZip(zipfile.ZipFile):
    names_read: list = []

    def read(self, name, pwd=None):
        WatchedZip.names_read.append(name)
        return super().read(name, pwd)


def test_tiles_boxes_and_ids(tmp_path, monkeypatch):
    wheel = tmp_path / "deepforest-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        # large scene 400 x 800: training rows [0, 600), validation rows [600, 800)
        z.writestr(f"{trees.DATA}{trees.LARGE}.png", _png(400, 800))
        z.writestr(f"{trees.DATA}{trees.LARGE}.xml", _voc([
            (10, 10, 50, 50),      # train tiles at (0, 0) only
            (180, 20, 240, 60),    # 20 of 60 px inside (0, 0): out there; whole in (100, 0)
            (150, 650, 250, 750),  # validation: half in (0, 600), half in (200, 600)
        ]))
        for scene in ("OSBS_029", "SOAP_061"):
            z.writestr(f"{trees.DATA}{scene}.png", _png(200, 200))
            z.writestr(f"{trees.DATA}{scene}.xml", _voc([(0, 0, 20, 20), (190, 190, 200, 200)]))
        z.writestr(f"{trees.DATA}an_unlisted_scene.png", b"never read")
    monkeypatch.setattr(trees.zipfile, "ZipFile", WatchedZip)
    assert trees.main(["--wheel", str(wheel), "--out", str(tmp_path / "out")]) == 0
    assert not any("unlisted" in name for name in WatchedZip.names_read)

    train = json.loads((tmp_path / "out/annotations/train.json").read_text())
    names = {im["file_name"]: im["id"] for im in train["images"]}
    boxes = {}
    for ann in train["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    assert boxes[names[f"{trees.LARGE}_0_0.png"]] == [[10, 10, 40, 40]]
    assert [80.0, 20.0, 60.0, 40.0] in boxes[names[f"{trees.LARGE}_100_0.png"]]
    assert boxes[names["OSBS_029_0_0.png"]] == [[0, 0, 20, 20], [190, 190, 10, 10]]
    assert len({a["id"] for a in train["annotations"]}) == len(train["annotations"])

    val = json.loads((tmp_path / "out/annotations/val.json").read_text())
    assert [im["file_name"] for im in val["images"]] == [f"{trees.LARGE}_0_600.png",
                                                         f"{trees.LARGE}_200_600.png"]
    assert [a["bbox"] for a in val["annotations"]] == [[150, 50, 50, 100], [0, 50, 50, 100]]
    assert Image.open(tmp_path / "out/val" / val["images"][0]["file_name"]).size == (200, 200)
