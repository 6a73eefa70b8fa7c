"""The measured sections of ``python -m benchmarks.speed`` (its docstring says
what each one times); each returns the figures that go into the report."""

from __future__ import annotations

import torch

from benchmarks.timing import interleaved, matmul_peak, summarise
from benchmarks.workload import IMAGE_SIZES, IRPE_K, build_model, make_batch, train_step_fn
from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.irpe import bucket_map
from detr_irpe.models.irpe_config import parse_irpe


def attention_section(device, reps: int) -> dict:
    torch.manual_seed(0)
    h, w, B, E, H = 25, 38, 2, 256, 8
    L = h * w
    src = torch.randn(L, B, E, device=device)
    pos = torch.randn(L, B, E, device=device)
    mask = torch.zeros(B, L, dtype=torch.bool, device=device)
    mask[1].view(h, w)[:, 30:] = True  # the second image is narrower: padding on the right
    variants = {
        "plain": ("", "auto"),
        "irpe-k (auto)": (IRPE_K, "auto"),
        "irpe-k (explicit)": (IRPE_K, "explicit"),
        "irpe-k (sdpa)": (IRPE_K, "sdpa"),
        "rpe-2.0-product-bias-1-k": ("rpe-2.0-product-bias-1-k", "auto"),
        "rpe-2.0-product-ctx-1-qkv": ("rpe-2.0-product-ctx-1-qkv", "auto"),
        "rpe-2.0-cross-ctx-1-k": ("rpe-2.0-cross-ctx-1-k", "auto"),
        "rpe-2.0-euc-ctx-1-k": ("rpe-2.0-euc-ctx-1-k", "auto"),
        "plain (again: noise floor)": ("", "auto"),
    }
    fns = {}
    for name, (cfg, backend) in variants.items():
        attn = IRPEMultiheadAttention(E, H, 0.1, parse_irpe(cfg), backend=backend).to(device)
        with torch.no_grad():
            for pname, p in attn.named_parameters():
                if "rpe_" in pname:
                    p.normal_(0, 0.1)
        attn.train()
        qk = (src + pos).requires_grad_()
        value = src.clone().requires_grad_()

        def step(attn=attn, qk=qk, value=value):
            attn(qk, qk, value, mask, (h, w)).sum().backward()

        fns[name] = step
    return summarise(interleaved(fns, reps, device))


def model_section(device, reps: int) -> dict:
    # "plain (again)" is a second, identical plain model: its ratio to "plain" shows how
    # far apart two runs of the same thing are on this machine (the noise floor).
    train_fns, infer_fns = {}, {}
    for name, enc in (("plain", ""), ("irpe-k", IRPE_K), ("plain (again)", "")):
        model, criterion, _ = build_model(enc, device)
        train_fns[name] = train_step_fn(model, criterion, device)
        infer = build_model(enc, device)[0].eval()
        image = [make_batch(device)[0][0]]

        def forward(infer=infer, image=image):
            with torch.no_grad():
                infer(image)

        infer_fns[name] = forward
    bucket_map.cache_clear()
    train = interleaved(train_fns, reps, device)
    # Inference is cheap next to a training step: three times the rounds, a steadier median.
    infer = interleaved(infer_fns, 3 * reps, device)
    info = bucket_map.cache_info()
    # The feature maps this section sees: the padded training batch and the inference image.
    shapes = {(-(-max(h for h, _ in IMAGE_SIZES) // 32), -(-max(w for _, w in IMAGE_SIZES) // 32)),
              (-(-IMAGE_SIZES[0][0] // 32), -(-IMAGE_SIZES[0][1] // 32))}
    held = sum(bucket_map("product", 2.0, h, w, device).ids.nbytes for h, w in shapes)
    cache = {"builds": info.misses, "lookups": info.hits + info.misses, "shapes": len(shapes),
             "held_bytes": held, "max_entries": info.maxsize}
    return {"train_step": summarise(train), "inference_batch1": summarise(infer),
            "bucket_cache": cache}


def flops_section(device, step_seconds: dict) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    out = {"matmul_peak_flops": matmul_peak(device)}
    for name, enc in (("plain", ""), ("irpe-k", IRPE_K)):
        model, criterion, _ = build_model(enc, device)
        step = train_step_fn(model, criterion, device)
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
        achieved = flops / step_seconds[name]
        out[name] = {"train_step_flops": flops, "achieved_flops": achieved,
                     "fraction_of_peak": achieved / out["matmul_peak_flops"]}
        # Inference FLOPs (eval mode; counted with autograd on, which FlopCounterMode's
        # module tracker needs, and which does not change the count of a forward).
        model.eval()
        counter = FlopCounterMode(display=False)
        with counter:
            model([make_batch(device)[0][0]])
        out[name]["inference_flops"] = counter.get_total_flops()
    return out
