"""Checkpoints by http(s) URL: downloaded once into the torch hub cache, hash-checked when
the file name carries one, then loaded safely; a failed download is one clear line."""

import functools
import hashlib
import http.server
import os
import threading

import pytest
import torch
from helpers import data_flags, shapes_dataset, tiny_config

import detr_irpe
from detr_irpe.checkpoint import load_checkpoint, url_cache_path
from detr_irpe.inference.detector import Detector
from detr_irpe.options import parse_args

SMALL = tiny_config(dec_layers=1, num_queries=4, num_classes=3)


class _Server:
    """A static file server on 127.0.0.1 that counts the requests per path."""

    def __init__(self, folder):
        self.hits = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A checkpoint under a hashed name and under a plain one; a fresh torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "www"
    folder.mkdir()
    torch.manual_seed(0)
    model, _, _ = detr_irpe.build_detr(enc_rpe2d="rpe-2.0-product-ctx-1-k", **SMALL)
    plain = folder / "rpe-2.0-product-ctx-1-k.pth"
    torch.save({"model": model.state_dict(), "args": dict(SMALL)}, plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    (folder / f"detr-tiny-{digest[:8]}.pth").write_bytes(plain.read_bytes())
    (folder / "detr-tiny-0123abcd.pth").write_bytes(plain.read_bytes())  # wrong hash
    server = _Server(folder)
    yield server, model, f"detr-tiny-{digest[:8]}.pth"
    server.close()


def test_url_is_downloaded_once_and_loads(served, tmp_path):
    server, model, hashed = served
    for name in (hashed, "rpe-2.0-product-ctx-1-k.pth"):
        for _ in range(2):
            ckpt = load_checkpoint(f"{server.url}/{name}")
            assert all(torch.equal(t, ckpt.model[k]) for k, t in model.state_dict().items())
        assert server.hits[f"/{name}"] == 1
        assert [p.name for p in (tmp_path / "torch_home" / "hub" / "checkpoints").rglob(name)] == [name]
    detector = Detector.from_checkpoint(f"{server.url}/{hashed}", size=64, max_size=96)
    assert detector.model.num_classes == 3
    assert len(server.hits) == 2  # the detector used the cached copy


def test_hash_in_the_file_name_is_checked(served, tmp_path):
    server, _, _ = served
    with pytest.raises(RuntimeError, match="hash"):
        load_checkpoint(f"{server.url}/detr-tiny-0123abcd.pth")
    assert not list((tmp_path / "torch_home" / "hub").rglob("detr-tiny-0123abcd.pth"))


def test_offline_is_one_line_naming_url_and_cache(served, tmp_path):
    server, _, hashed = served
    server.close()
    url = f"{server.url}/{hashed}"
    with pytest.raises(ConnectionError) as err:
        load_checkpoint(url)
    message = str(err.value)
    assert "\n" not in message and url in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert os.path.dirname(url_cache_path(url)) in message


def test_command_line_accepts_urls(tmp_path):
    root = shapes_dataset(tmp_path / "data", num_train=2, num_val=2, image_size=48, seed=1)
    data = data_flags(root)
    url = "https://example.invalid/rpe-2.0-product-ctx-1-k.pth"
    assert parse_args([*data, "--finetune_from", url, "--output_dir", str(tmp_path)]).finetune_from == url
    assert parse_args([*data, "--eval", "--resume", url]).resume == url


def test_two_urls_with_one_file_name_give_their_own_models(served, tmp_path):
    server, model, _ = served
    folder = tmp_path / "www"
    for sub, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        other, _, _ = detr_irpe.build_detr(enc_rpe2d="rpe-2.0-product-ctx-1-k", **SMALL)
        (folder / sub).mkdir()
        torch.save({"model": other.state_dict(), "args": dict(SMALL)}, folder / sub / "model.pth")
    a = load_checkpoint(f"{server.url}/a/model.pth").model
    b = load_checkpoint(f"{server.url}/b/model.pth").model
    for got, sub in ((a, "a"), (b, "b")):
        served_model = torch.load(folder / sub / "model.pth")["model"]
        assert torch.equal(got["query_embed.weight"], served_model["query_embed.weight"])
    assert not torch.equal(a["query_embed.weight"], b["query_embed.weight"])


def test_a_download_that_is_not_a_checkpoint_is_not_kept(served, tmp_path):
    server, model, _ = served
    page = tmp_path / "www" / "x.pth"
    page.write_text("<html><body>502 Bad Gateway</body></html>")
    url = f"{server.url}/x.pth"
    with pytest.raises(ValueError, match="x.pth"):
        load_checkpoint(url)
    assert not os.path.exists(url_cache_path(url))
    torch.save({"model": model.state_dict(), "args": dict(SMALL)}, page)  # the server is fixed
    assert torch.equal(load_checkpoint(url).model["query_embed.weight"],
                       model.state_dict()["query_embed.weight"])
    assert server.hits["/x.pth"] == 2
