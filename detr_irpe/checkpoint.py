"""Reading and writing checkpoints: official DETR / DETR-with-iRPE files and ours.

A checkpoint is a ``torch.save``d dict with ``model`` (the state dict) and, when written
by training, ``optimizer``, ``lr_scheduler``, ``epoch`` and ``args`` (with ``--ema``
also ``ema``, the averaged weights, and ``ema_updates``).  The official
code stores ``args`` as an ``argparse.Namespace``; we store plain dicts.  Files are
read with ``torch.load(weights_only=True)``: arbitrary pickled code is never run.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import pickle
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
from dataclasses import dataclass, field

import torch

from detr_irpe.models.config import LAST_STAGE, DETRConfig
from detr_irpe.models.fields import own_options
from detr_irpe.models.irpe_config import canonical_irpe
from detr_irpe.training.compiled import plain_state_dict
from detr_irpe.urls import is_url

# Types beyond tensors and primitives that official and our checkpoints contain.
SAFE_GLOBALS = [argparse.Namespace]
# torch hub's naming convention for a checked download: name-<first hex digits of the
# file's SHA-256>.ext, e.g. detr-r50-e632da11.pth.  At least 8 digits, so that names such
# as rpe-2.0-product-ctx-1-k.pth carry no hash.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")
# What the official iRPE ratios give for B = int(2 * ratio); other B map to B / 2.
_RATIO_FOR_BETA = {3: 1.9, 4: 2.0, 5: 2.5, 6: 3.0}


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    model:    the state dict;  options: model options (``DETRConfig`` field names) read
    from the stored args, or inferred from tensor shapes where args are missing (the iRPE
    string in its canonical spelling);  raw: the whole loaded dict.
    """

    model: dict
    options: dict
    raw: dict = field(default_factory=dict)

    @property
    def args(self) -> dict:
        """The stored command-line options (ours: a dict; official files: a Namespace)."""
        args = self.raw.get("args", {})
        return dict(vars(args) if isinstance(args, argparse.Namespace) else args or {})

    @property
    def epoch(self) -> int | None:
        """The last completed epoch (counted from 0), ``None`` when not recorded."""
        return self.raw.get("epoch")

    def progress(self) -> str:
        """How far training went, in words (epochs counted from 0, as printed)."""
        if self.epoch is None:
            return "training progress not recorded"
        step = self.raw.get("resume_step", 0)
        later = f" and {step} steps of epoch {self.epoch + 1}" if step else ""
        return f"trained through epoch {self.epoch}{later}"

    @property
    def inference_model(self) -> dict:
        """The weights to evaluate and predict with: the moving average (``"ema"``, written
        by ``--ema``) when the checkpoint has one, else ``model``."""
        ema = self.raw.get("ema")
        return ema if isinstance(ema, dict) and ema else self.model

    def eval_sizes(self) -> dict:
        """``val_size`` / ``max_size`` / ``size_multiple`` the checkpoint was evaluated with,
        where stored."""
        return {k: self.args[k] for k in ("val_size", "max_size", "size_multiple")
                if self.args.get(k)}

    def config(self, **overrides) -> DETRConfig:
        """A :class:`DETRConfig` for rebuilding the model (no backbone download: the
        checkpoint carries the backbone weights)."""
        # The stored model holds no training-only part (dense_head.py), so none is built.
        opts = {"pretrained_backbone": "none", **self.options, "dense_aux_coef": 0.0, **overrides}
        return DETRConfig.from_options(opts)


def _torch_load(path: str, trust: bool):
    """``torch.load`` of a checkpoint file, with one clear error for each way it fails:
    ``pickle.UnpicklingError`` for a disallowed type (only then is ``trust`` the answer),
    ``ValueError`` for a file that is not a checkpoint (empty, cut short, another format)."""
    if os.path.getsize(path) == 0:
        raise _not_a_checkpoint(path, "the file is empty")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 -- torch.load fails in many ways on foreign bytes
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise _not_a_checkpoint(path, f"{type(err).__name__}: {err}") from None
        raise pickle.UnpicklingError(
            f"{path}: refused to load: the file contains {found.group(1)}, which is neither a "
            f"tensor nor plain data, and unpickling it could run arbitrary code. If you trust "
            f"the file's origin, load it with trust=True (command line: --trust_checkpoint)."
        ) from None


def _not_a_checkpoint(path: str, reason: str) -> ValueError:
    """The error for bytes that torch.load cannot read; ``reason`` is cut to its first
    line and sentence (torch's own advice to turn off ``weights_only`` is left out: it does not
    apply to such a file)."""
    reason = (reason.split("WeightsUnpickler error:")[-1].strip().splitlines() or [""])[0]
    reason = re.split(r"(?<=[.?!])\s", reason, maxsplit=1)[0][:160]
    return ValueError(
        f"{path}: not a PyTorch checkpoint ({reason}); a file cut short by an interrupted "
        f"download, copy or save looks like this: copy or download it again"
    )


def _infer_options(state: dict) -> dict:
    """Model options that can be read off the tensor shapes of a DETR state dict."""
    opts = {}
    if "class_embed.weight" in state:
        opts["num_classes"] = state["class_embed.weight"].shape[0] - 1
    if "query_embed.weight" in state:
        opts["num_queries"], opts["hidden_dim"] = state["query_embed.weight"].shape
    elif "anchor_logits" in state and "class_embed.weight" in state:  # --point_positions
        opts["num_queries"] = state["anchor_logits"].shape[0]
        opts["hidden_dim"] = state["class_embed.weight"].shape[1]
    enc = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.encoder\.layers\.(\d+)\.", k))}
    dec = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.decoder\.layers\.(\d+)\.", k))}
    if enc:
        opts["enc_layers"] = max(enc) + 1
    if dec:
        opts["dec_layers"] = max(dec) + 1
    if "transformer.encoder.layers.0.linear1.weight" in state:
        opts["dim_feedforward"] = state["transformer.encoder.layers.0.linear1.weight"].shape[0]
    opts["pre_norm"] = "transformer.encoder.norm.weight" in state
    opts["query_anchors"] = "anchor_logits" in state
    opts["anchor_content"] = "content_points" in state
    opts["point_positions"] = "position_mlp.layers.0.weight" in state
    opts["position_embedding"] = "learned" if "backbone.1.row_embed.weight" in state else "sine"
    body = "backbone.0.body."
    if f"{body}layer1.0.conv1.weight" in state:
        opts.update(_infer_resnet(state, body))
    opts["enc_rpe2d"] = _infer_irpe(state)
    return opts


def _infer_resnet(state: dict, body: str) -> dict:
    """backbone, backbone_norm, backbone_stride and backbone_width (the stem's channels),
    read off the ResNet's keys and shapes.  The last
    stage present gives the stride; the block count of layer3 (or, at stride 8, of layer2)
    the depth.  At stride 8 a ResNet-101 is a ResNet-50 (they differ in layer3 only)."""
    def blocks(stage: str) -> int:
        found = {int(m.group(1)) for k in state
                 if (m := re.match(rf"{re.escape(body)}{stage}\.(\d+)\.", k))}
        return max(found, default=-1) + 1

    stride = next((s for s, stage in LAST_STAGE.items() if blocks(stage)), min(LAST_STAGE))
    bottleneck = f"{body}layer1.0.conv3.weight" in state
    if stride == 8:
        name = "resnet50" if bottleneck else "resnet34" if blocks("layer2") == 4 else "resnet18"
    elif bottleneck:
        name = "resnet101" if blocks("layer3") == 23 else "resnet50"
    else:
        name = "resnet34" if blocks("layer3") == 6 else "resnet18"
    norm = "batch" if f"{body}bn1.num_batches_tracked" in state else "frozen"
    return {"backbone": name, "backbone_norm": norm, "backbone_stride": stride,
            "backbone_width": state[f"{body}conv1.weight"].shape[0]}


def _infer_irpe(state: dict) -> str:
    """The iRPE string of the encoder's first layer, read off its table names and shapes."""
    prefix = "transformer.encoder.layers.0.self_attn."
    tables = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix + "rpe_")}
    if not tables:
        return ""
    rpe_on = "".join(w for w in "qkv" if any(k.startswith(f"rpe_{w}.") for k in tables))
    mode = "bias" if any(k.endswith("lookup_table_bias") for k in tables) else "ctx"
    name, table = sorted(tables.items())[0]
    # Bucket axis: last for q/k ctx tables, 1 for bias tables and v tables.
    n = table.shape[-1] if (mode == "ctx" and not name.startswith("rpe_v")) else table.shape[1]
    if any(".rp_rows." in k for k in tables):
        method, side = "cross", n
    else:
        # product holds S^2 buckets (S odd), euc/quant hold S.  A perfect square is read as
        # product: every published checkpoint is product.
        root = round(n**0.5)
        method, side = ("product", root) if root * root == n and root % 2 else ("euc", n)
    beta_int = (side - 1) // 2
    ratio = _RATIO_FOR_BETA.get(beta_int, beta_int / 2)
    return f"rpe-{ratio}-{method}-{mode}-{int(table.shape[0] == 1)}-{rpe_on}"


def _options_from_args(args) -> dict:
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        return {}
    return {k: v for k, v in own_options(DETRConfig, args).items() if v is not None}


def url_cache_path(url: str) -> str:
    """Where :func:`fetch_checkpoint` keeps ``url``:
    ``<torch.hub.get_dir()>/checkpoints/<first 16 hex of the URL's sha256>/<file name>``, so
    two URLs with one file name (``.../a/model.pth``, ``.../b/model.pth``) never share a copy."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", key, name)


def fetch_checkpoint(url: str) -> str:
    """The local copy of a checkpoint URL (:func:`url_cache_path`), downloaded on first use.
    When the file name carries a hash (``name-<hex>.pth``) the download must match it.
    Raises ``ConnectionError`` naming the URL and the cache folder when the download fails."""
    local = url_cache_path(url)
    if os.path.isfile(local):
        return local
    folder = os.path.dirname(local)
    os.makedirs(folder, exist_ok=True)
    digest = _HASH_IN_NAME.search(os.path.basename(local))
    try:
        torch.hub.download_url_to_file(url, local, digest.group(1) if digest else None,
                                       progress=False)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise ConnectionError(
            f"cannot download {url} ({reason}); check the connection, or put the file into "
            f"{folder} (or pass a local path)"
        ) from None
    return local


def load_checkpoint(path: str, trust: bool = False) -> Checkpoint:
    """Read an official or our own checkpoint safely, from a file or an http(s) URL
    (downloaded once into the torch hub cache, see :func:`fetch_checkpoint`).

    Options come from the stored ``config``/``args`` where present; the rest (number of
    classes, queries, layers, iRPE configuration, ...) is inferred from tensor shapes.
    The iRPE ratio can only be inferred up to its bucket count (1.9/2.0/2.5/3.0 for the
    published counts); stored args always win.
    """
    if is_url(path):
        local = fetch_checkpoint(path)
        try:
            return _read_checkpoint(local, trust)
        except Exception:  # e.g. an error page saved under the name: not kept in the cache
            os.remove(local)
            raise
    return _read_checkpoint(path, trust)


def _read_checkpoint(path: str, trust: bool) -> Checkpoint:
    """:func:`load_checkpoint` of a local file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    raw = _torch_load(path, trust)
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        state = raw["model"]
    elif isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state, raw = raw, {"model": raw}
    else:
        raise ValueError(f"{path}: not a DETR checkpoint (expected a dict with a 'model' entry)")
    state = plain_state_dict(state)  # saved from a torch.compile(model) wrapper: keys unchanged
    inferred = _infer_options(state)
    stored = _options_from_args(raw.get("config", raw.get("args")))
    options = {**inferred, **stored}
    # A stored option that contradicts the tensors means the args are stale: trust shapes.
    for key in ("num_classes", "num_queries", "hidden_dim", "enc_layers", "dec_layers"):
        if key in inferred:
            options[key] = inferred[key]
    if "enc_rpe2d" in stored and bool(stored["enc_rpe2d"]) != bool(inferred["enc_rpe2d"]):
        options["enc_rpe2d"] = inferred["enc_rpe2d"]
    options["enc_rpe2d"] = canonical_irpe(options["enc_rpe2d"])
    return Checkpoint(state, options, raw)


TEMP_PREFIX = ".tmp-"  # of a checkpoint being written; a crash may leave one behind


def save_checkpoint(obj: dict, path: str) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename, so
    an interruption leaves either the old or the new file, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        # torch.save reports a full disk as an OSError or as a RuntimeError of its zip writer
        if not isinstance(err, (OSError, RuntimeError)):
            raise
        needed, free = _tensor_bytes(obj), shutil.disk_usage(directory).free
        if getattr(err, "errno", None) == errno.ENOSPC or free < needed:
            raise OSError(errno.ENOSPC, f"no space left on the device to write {path} (about "
                          f"{needed / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free); free "
                          f"some space there or choose another --output_dir, then continue "
                          f"with --resume auto") from None
        raise


def _tensor_bytes(obj) -> int:
    """The bytes of the tensors in a (nested) checkpoint dict: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
