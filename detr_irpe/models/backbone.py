"""ResNet backbone (frozen batch norm, or trainable batch norm for training from scratch),
the padded image batch and the Joiner.

State-dict names match DETR: ``backbone.0.body.<resnet names>`` for the ResNet (stem,
layer1..layer4; no fc), ``backbone.1.*`` for a learned position embedding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock
from torchvision.ops.misc import FrozenBatchNorm2d

from .config import BASIC_DEPTHS, BASIC_RESNETS, LAST_STAGE

# Trainable parts of the ResNet, counted from the top, as torchvision's
# ``trainable_backbone_layers``: 3 = layer2..layer4 (DETR), 5 = everything.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


@dataclass
class ImageBatch:
    """Images padded bottom/right with zeros to a common size.

    tensors: (B, 3, H, W) float; mask: bool (B, H, W), True on padding.
    """

    tensors: Tensor
    mask: Tensor

    @classmethod
    def from_images(cls, images: Sequence[Tensor] | Tensor,
                    size: tuple[int, int] | None = None) -> ImageBatch:
        """Pad a list of (3, H_i, W_i) images to their largest extent, or to ``size`` (H, W)
        when given (``--size_buckets``); a (B, 3, H, W) tensor is taken as it is."""
        if isinstance(images, Tensor):
            if images.dim() != 4:
                raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
            B, _, H, W = images.shape
            mask = torch.zeros(B, H, W, dtype=torch.bool, device=images.device)
            return cls(images, mask)
        if len(images) == 0:
            raise ValueError("expected at least one image")
        for n, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {n}: expected a (3, H, W) tensor, got {tuple(img.shape)}")
        H = max(img.shape[1] for img in images)
        W = max(img.shape[2] for img in images)
        if size is not None:
            if size[0] < H or size[1] < W:
                raise ValueError(f"cannot pad images of up to {H}x{W} to {size[0]}x{size[1]}")
            H, W = size
        first = images[0]
        tensors = first.new_zeros(len(images), 3, H, W)
        mask = torch.ones(len(images), H, W, dtype=torch.bool, device=first.device)
        for n, img in enumerate(images):
            tensors[n, :, : img.shape[1], : img.shape[2]].copy_(img)
            mask[n, : img.shape[1], : img.shape[2]] = False
        return cls(tensors, mask)

    def to(self, device, non_blocking: bool = False) -> ImageBatch:
        return ImageBatch(self.tensors.to(device, non_blocking=non_blocking),
                          self.mask.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ImageBatch:
        """Page-locked copies (the data loader calls this with ``pin_memory=True``)."""
        return ImageBatch(self.tensors.pin_memory(), self.mask.pin_memory())


def _load_backbone_weights(net: nn.Module, name: str, pretrained: str | None) -> None:
    """Fill ``net`` (a torchvision ResNet) from ImageNet weights or a local file."""
    if pretrained in (None, "", "none"):
        return
    if pretrained == "imagenet":
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as err:  # offline, proxy, corrupt cache...
            raise RuntimeError(
                f"could not load ImageNet weights for {name} ({weights.url}): {err}. "
                f"Put the file in the torch hub cache ({torch.hub.get_dir()}/checkpoints), "
                f"pass a local file with pretrained_backbone=<path>, or train from random "
                f"init with pretrained_backbone='none'"
            ) from err
    else:
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(
                f"pretrained_backbone={pretrained!r}: no such file; expected 'imagenet', "
                f"'none' or the path of a torchvision {name} state dict"
            )
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        prefix = "backbone.0.body."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise RuntimeError(
            f"pretrained_backbone={pretrained!r} does not fit {name}: missing {missing[:5]}"
        )


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A frozen batch norm whose affine map is applied by the convolution before it
    (:class:`ConvFrozenBN2d`), so its own forward is the identity.

    It keeps FrozenBatchNorm2d's buffers (weight, bias, running_mean, running_var) and
    state-dict names, so checkpoints are unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class ConvFrozenBN2d(nn.Conv2d):
    """A bias-free convolution followed by a frozen batch norm, computed as one convolution
    with weight ``W * scale`` and bias ``shift`` (scale and shift from the norm's buffers).

    The same function as conv then norm up to float rounding, without two elementwise
    passes over every activation (the time saved: docs/benchmarks.md).  The weight stays
    the parameter (gradients flow to it through the product); the norm stays a registered
    module, this one only refers to it.
    """

    def attach(self, norm: FoldedFrozenBatchNorm2d) -> ConvFrozenBN2d:
        self._norm = (norm,)  # a tuple: not registered as a child (no duplicate keys)
        return self

    def forward(self, x: Tensor) -> Tensor:
        # Folded on every call (a weight-sized product, small next to the convolution): a
        # cache keyed on tensor versions would go stale, since the fused AdamW kernel
        # updates weights in place without bumping their version counters.
        norm = self._norm[0]
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        shift = norm.bias - norm.running_mean * scale
        dtype = self.weight.dtype
        weight = self.weight * scale.to(dtype)[:, None, None, None]
        return self._conv_forward(x, weight, shift.to(dtype))


def _fold_frozen_norms(net: nn.Module) -> None:
    """Replace every (bias-free conv, frozen norm) pair of a torchvision ResNet -- the stem,
    ``convN``/``bnN`` in each block and ``downsample`` -- by :class:`ConvFrozenBN2d` and
    :class:`FoldedFrozenBatchNorm2d`, keeping parameter objects and names."""

    def fold(parent: nn.Module, conv_name: str, norm_name: str) -> None:
        conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
        if type(conv) is not nn.Conv2d or conv.bias is not None:
            return
        if type(norm) is not FrozenBatchNorm2d:
            return
        folded_norm = FoldedFrozenBatchNorm2d(norm.weight.numel(), eps=norm.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            setattr(folded_norm, name, getattr(norm, name))
        new = ConvFrozenBN2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, bias=False, device="meta",
        )
        new.weight = conv.weight
        setattr(parent, conv_name, new.attach(folded_norm))
        setattr(parent, norm_name, folded_norm)

    for module in list(net.modules()):  # the ResNet itself (stem) and every block
        for k in (1, 2, 3):
            if hasattr(module, f"conv{k}") and hasattr(module, f"bn{k}"):
                fold(module, f"conv{k}", f"bn{k}")
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
            fold(downsample, "0", "1")


def _trainable_prefixes(layers: int) -> tuple[str, ...]:
    prefixes = _STAGES[:layers]
    return prefixes + ("bn1",) if "conv1" in prefixes else prefixes


def narrow_resnet(depths: Sequence[int], width: int, norm_layer) -> nn.Module:
    """A basic-block ResNet as torchvision builds resnet18/34 (the same module names, hence
    state-dict keys, and the same initialisation), with ``width`` channels in its first
    stage instead of 64; each later stage doubles them.  No ``fc``: the backbone never
    uses it."""
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = norm_layer(width)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    channels = width
    for n, blocks in enumerate(depths):
        out, stride = width * 2 ** n, 1 if n == 0 else 2
        down = None
        if stride != 1 or channels != out:
            down = nn.Sequential(nn.Conv2d(channels, out, 1, stride, bias=False), norm_layer(out))
        layer = [BasicBlock(channels, out, stride, down, norm_layer=norm_layer)]
        layer += [BasicBlock(out, out, norm_layer=norm_layer) for _ in range(blocks - 1)]
        setattr(net, f"layer{n + 1}", nn.Sequential(*layer))
        channels = out
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


class Backbone(nn.Module):
    """ResNet returning layer4 features (stride 32, or 16 with dilation), or, with
    ``stride=16``, layer3 features (C4: layer4 is left out of the model and its state dict;
    for small images, where stride 32 leaves only a few feature cells), or with ``stride=8``
    layer2 features (C3: layer3 and layer4 left out; for tiny images).

    ``norm='frozen'`` (DETR): every batch norm is a fixed affine map, right for a pretrained
    backbone.  ``norm='batch'``: ordinary batch norm that learns its statistics, for training
    from random init, where a frozen norm is an identity and leaves the deep ResNet
    unnormalised.  ``trainable_layers`` counts stages from the top (3 = layer2..layer4, as
    DETR; 5 = all, the choice for random init); nothing trains when ``train_backbone`` is
    False.
    """

    def __init__(
        self,
        name: str,
        train_backbone: bool,
        dilation: bool,
        pretrained: str | None,
        norm: str,
        trainable_layers: int,
        stride: int,
        width: int = 64,
        channels_last_training: bool = False,
    ):
        """The values are checked by :class:`~detr_irpe.models.config.DETRConfig`."""
        super().__init__()
        self.channels_last_training = channels_last_training
        norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
        if width == 64:
            net = getattr(torchvision.models, name)(
                weights=None, replace_stride_with_dilation=[False, False, dilation],
                norm_layer=norm_layer)
        else:
            net = narrow_resnet(BASIC_DEPTHS[name], width, norm_layer)
        _load_backbone_weights(net, name, pretrained)
        if norm == "frozen":
            _fold_frozen_norms(net)
        prefixes = _trainable_prefixes(trainable_layers)
        for pname, param in net.named_parameters():
            param.requires_grad_(train_backbone and pname.startswith(prefixes))
        last = LAST_STAGE[stride]  # the getter drops the stages after it
        self.body = IntermediateLayerGetter(net, return_layers={last: "0"})
        top = 8 * width if name in BASIC_RESNETS else 32 * width  # channels of layer4
        self.num_channels = top * stride // 32  # each stage below halves them

    def forward(self, batch: ImageBatch) -> tuple[Tensor, Tensor]:
        """Returns features (B, C, h, w) and their mask (B, h, w), True on padding."""
        x = batch.tensors
        if x.device.type == "cpu" and (not torch.is_grad_enabled() or self.channels_last_training
                                       or torch.is_autocast_enabled("cpu")):
            # oneDNN picks faster convolutions (and max-pooling) for channels-last input in
            # inference and in bf16 training; in float32 training for small trunks on small
            # images, not for DETR-R50 at COCO's sizes (docs/benchmarks.md, "CPU settings
            # applied by the project").
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.body(x)["0"]
        mask = F.interpolate(batch.mask[None].float(), size=feats.shape[-2:])[0].to(torch.bool)
        return feats, mask


class Joiner(nn.Sequential):
    """``[backbone, position_embedding]`` -- DETR's module layout (``backbone.0``/``.1``)."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, batch: ImageBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns features (B, C, h, w), mask (B, h, w) and position (B, D, h, w)."""
        feats, mask = self[0](batch)
        pos = self[1](mask).to(feats.dtype)
        return feats, mask, pos

    def forward_per_image(self, images: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Like :meth:`forward`, but each image goes through the ResNet alone and the
        *feature maps* are padded.  The result for one image then does not depend on the
        other images of the batch (with image padding, the convolutions see the padding
        near the bottom/right border), so evaluation is independent of the batch size."""
        maps = [self[0](ImageBatch.from_images([img]))[0] for img in images]
        h = max(f.shape[-2] for f in maps)
        w = max(f.shape[-1] for f in maps)
        feats = maps[0].new_zeros(len(maps), maps[0].shape[1], h, w)
        mask = torch.ones(len(maps), h, w, dtype=torch.bool, device=feats.device)
        for n, f in enumerate(maps):
            feats[n, :, : f.shape[-2], : f.shape[-1]] = f[0]
            mask[n, : f.shape[-2], : f.shape[-1]] = False
        return feats, mask, self[1](mask).to(feats.dtype)
