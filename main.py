"""Command-line entry point.  Training and evaluation: see README."""

import sys

import torch

import detr_irpe


def main() -> int:
    model, _, post = detr_irpe.build_detr(pretrained_backbone="none")
    model.eval()
    with torch.no_grad():
        out = model([torch.randn(3, 480, 640)])
    det = post["bbox"](out, torch.tensor([[480, 640]]))[0]
    print(f"DETR-R50 + {model.transformer.encoder.layers[0].self_attn.irpe.to_string()}: "
          f"pred_logits {tuple(out['pred_logits'].shape)}, {len(det['boxes'])} detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
