"""Typed model configuration.  Field names are the official command-line names.

Plain Python (no torch): the command line validates against it before the heavy imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .models.irpe_config import IRPE_INITS, IRPEConfig, parse_irpe

PAPER_IRPE = "rpe-2.0-product-ctx-1-k"
# DETR's evaluation resize: shorter side 800, longer side at most 1333.
EVAL_SIZE, EVAL_MAX_SIZE = 800, 1333
# COCOeval implementations (detr_irpe.evaluation.backends); "auto": faster_coco_eval if installed.
EVAL_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONE_NORMS = ("frozen", "batch")
BACKBONE_STRIDES = (32, 16)  # 32: layer4 features (DETR); 16: layer3 features (C4)
# The options that shape the model and its trainable parameters: a checkpoint fixes them.
ARCHITECTURE = ("num_classes", "enc_rpe2d", "backbone", "dilation", "position_embedding",
                "hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                "num_queries", "pre_norm", "backbone_norm", "trainable_backbone_layers",
                "backbone_stride")


@dataclass
class DETRConfig:
    """Everything :func:`detr_irpe.build_detr` needs; defaults are the paper's recipe.

    ``num_classes`` is "largest label + 1" (91 for COCO, whose ids run to 90), and the
    class head has ``num_classes + 1`` outputs, the last one meaning "no object".
    ``enc_rpe2d`` is the official iRPE string ('' = plain DETR); ``irpe_init`` how its
    tables start: 'xavier' (the official run) or 'zero' (a fresh model is plain DETR;
    see docs/irpe.md section 6).
    ``pretrained_backbone``: 'imagenet' (torchvision IMAGENET1K_V1), 'none' (random
    init) or the path of a torchvision ResNet state dict.
    ``backbone_norm`` 'frozen' (DETR) or 'batch' (trainable batch norm, for random init) and
    ``trainable_backbone_layers`` (3 = layer2..layer4 as DETR, 5 = all) only matter when
    training from scratch; see the README.
    ``backbone_stride`` 32 (DETR: layer4 features) or 16 (layer3 features, no layer4; for
    small images).  ``dense_aux_coef`` > 0 adds the training-only dense auxiliary head on
    the encoder output (:mod:`detr_irpe.models.dense_head`) with that loss weight; 0 = off.
    Like ``aux_loss`` it is a training option: the inference model is the same either way.
    """

    num_classes: int = 91
    enc_rpe2d: str = PAPER_IRPE
    irpe_init: str = IRPE_INITS[0]
    backbone: str = "resnet50"
    dilation: bool = False
    position_embedding: str = "sine"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    pre_norm: bool = False
    aux_loss: bool = True
    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    eos_coef: float = 0.1
    lr_backbone: float = 1e-5
    pretrained_backbone: str = "imagenet"
    backbone_norm: str = "frozen"
    trainable_backbone_layers: int = 3
    backbone_stride: int = BACKBONE_STRIDES[0]
    dense_aux_coef: float = 0.0

    def __post_init__(self):
        parse_irpe(self.enc_rpe2d)  # a bad string fails at construction, naming the flag
        if self.num_classes < 1:
            raise ValueError(
                f"num_classes={self.num_classes}: must be >= 1 (largest label + 1; 91 for COCO)"
            )
        for name in ("hidden_dim", "nheads", "enc_layers", "dec_layers", "num_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.dense_aux_coef < 0:
            raise ValueError(f"dense_aux_coef={self.dense_aux_coef}: must be >= 0 (0 = off)")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim={self.hidden_dim} is not divisible by nheads={self.nheads}")

    @property
    def irpe(self) -> IRPEConfig | None:
        return parse_irpe(self.enc_rpe2d)

    @classmethod
    def from_options(cls, options: dict, strict: bool = True) -> DETRConfig:
        """Build from a dict of options (e.g. ``vars(args)``); unknown names are an error
        when ``strict``, else ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if strict and unknown:
            raise TypeError(f"unknown model options {unknown}; valid options: {sorted(known)}")
        return cls(**{k: v for k, v in options.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)
