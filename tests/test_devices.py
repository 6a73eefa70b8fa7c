"""Attention backends and a whole DETR training step, on every available device, against
float64 on the CPU.

Forward and backward (input gradients and the iRPE table gradients), with padding, in
float32 and under autocast.  On a CPU-only machine the cases run on the CPU; where CUDA is
present the same cases run on the GPU too (``benchmarks/gpu_check.py`` runs this file there).
"""

import itertools

import pytest
import torch
from helpers import tiny_config
from reference import reference_attention

from detr_irpe import build_detr
from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.fused_attention import fused_attention
from detr_irpe.models.irpe import bucket_ids
from detr_irpe.models.irpe_config import parse_irpe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Every bucket method and mode, tables on q, k and v, shared and per-head tables.
CONFIGS = ["", "rpe-2.0-product-ctx-1-k", "rpe-2.0-product-bias-1-k", "rpe-1.9-euc-ctx-0-q",
           "rpe-2.5-quant-bias-1-qk", "rpe-2.0-cross-ctx-1-qkv", "rpe-2.0-quant-ctx-0-kv",
           "rpe-1.9-cross-bias-0-k", "rpe-2.0-euc-ctx-1-v"]


def _supports(backend: str, config: str) -> bool:
    cfg = parse_irpe(config)
    if cfg is None:
        return True
    if backend == "sdpa":
        return "v" not in cfg.rpe_on
    if backend == "fused":
        return cfg.rpe_on == "k" and cfg.mode == "ctx" and cfg.method != "cross"
    return True


CASES = [(c, b) for c, b in itertools.product(CONFIGS, ["explicit", "sdpa", "fused", "auto"])
         if _supports(b, c)]


def _case(config: str, backend: str, device: str):
    """A module with random non-zero tables, inputs with a padded image, and the float64
    reference output and gradients (computed on the CPU)."""
    torch.manual_seed(0)
    h, w, E, H, B = 4, 5, 32, 4, 2
    L = h * w
    cfg = parse_irpe(config)
    attn = IRPEMultiheadAttention(E, H, 0.0, cfg, backend=backend)
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if "rpe_" in name:
                p.normal_(0, 0.5)
    x = torch.randn(L, B, E, dtype=torch.float64)
    pos = torch.randn(L, B, E, dtype=torch.float64)
    weight = torch.randn(L, B, E, dtype=torch.float64)  # a loss that weighs every output
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[1].view(h, w)[:, 4:] = True
    mask[1].view(h, w)[3:, :] = True

    params = {n: p.detach().double().requires_grad_() for n, p in attn.named_parameters()}
    xr = x.clone().requires_grad_()
    ref = reference_attention(xr + pos, xr + pos, xr, params, H, cfg, mask, (h, w))
    ref_grads = torch.autograd.grad((ref * weight).sum(), [xr, *params.values()])
    expected = {"output": ref, "x": ref_grads[0], **dict(zip(params, ref_grads[1:]))}

    attn = attn.to(device).train()  # train mode: auto picks its training path
    xd = x.float().to(device).requires_grad_()
    inputs = (xd, pos.float().to(device), weight.float().to(device), mask.to(device), (h, w))
    return attn, inputs, expected


def _run(attn, inputs, autocast_dtype=None):
    x, pos, weight, mask, hw = inputs
    ctx = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype
           else torch.autocast(x.device.type, enabled=False))
    with ctx:
        out = attn(x + pos, x + pos, x, mask, hw)
    (out.float() * weight).sum().backward()
    got = {"output": out.detach(), "x": x.grad}
    got.update({n: p.grad for n, p in attn.named_parameters()})
    return got


def _compare(got, expected, rtol, atol):
    assert set(got) == set(expected)
    for name, ref in expected.items():
        value = got[name]
        assert value is not None, f"no gradient for {name}"
        torch.testing.assert_close(value.double().cpu(), ref.detach(), rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config,backend", CASES)
def test_float32_matches_float64_reference(device, config, backend):
    attn, inputs, expected = _case(config, backend, device)
    _compare(_run(attn, inputs), expected, rtol=1e-4, atol=1e-4)


# bf16 keeps 8 bits of mantissa, fp16 11: the tolerance is a few units in the last place of
# the larger values (outputs and gradients here are of order 1 to 10).
AMP = {"bf16": (torch.bfloat16, 0.1), "fp16": (torch.float16, 0.02)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("config,backend", CASES)
def test_autocast_matches_float64_reference(device, amp, config, backend):
    dtype, tol = AMP[amp]
    attn, inputs, expected = _case(config, backend, device)
    _compare(_run(attn, inputs, dtype), expected, rtol=tol, atol=tol)


def _detr_step(model, criterion, images, targets):
    """Losses and gradients of one training step (no optimiser update)."""
    model.zero_grad(set_to_none=True)
    losses = criterion(model(images), targets)
    total = sum(losses[k] * w for k, w in criterion.weight_dict.items())
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("enc", ["", "rpe-2.0-product-ctx-1-k"])
def test_detr_training_step_matches_float64_cpu(device, enc, monkeypatch):
    # Strict float32 on the GPU: cuDNN's convolutions default to TF32 on recent GPUs (a
    # 10-bit mantissa, about 1e-4 relative error in the losses measured on an H200).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model, criterion, _ = build_detr(**tiny_config(
        enc_rpe2d=enc, nheads=4, enc_layers=2, dim_feedforward=64, num_queries=6, num_classes=5,
        dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rpe_" in name:
                p.normal_(0, 0.5)
    model.train()
    images = [torch.randn(3, 96, 128), torch.randn(3, 64, 160)]  # padded in the batch
    targets = [{"labels": torch.tensor([1, 3]),
                "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]])},
               {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.8, 0.6]])}]
    # The criterion computes its losses in float32 (as under AMP); everything before the
    # losses runs in float64 here.
    ref_losses, ref_grads = _detr_step(model.double(), criterion,
                                       [i.double() for i in images], targets)

    model, criterion = model.float().to(device), criterion.to(device)
    on_device = [{k: v.to(device) for k, v in t.items()} for t in targets]
    losses, grads = _detr_step(model, criterion, [i.to(device) for i in images], on_device)
    for k, ref in ref_losses.items():
        torch.testing.assert_close(losses[k].double().cpu(), ref.double(), rtol=1e-4, atol=1e-5,
                                   msg=lambda m, k=k: f"{k}: {m}")
    assert set(grads) == set(ref_grads)
    for n, ref in ref_grads.items():
        # Gradients through a ResNet in float32: compared relative to each tensor's scale.
        scale = float(ref.abs().max()) + 1e-12
        err = float((grads[n].double().cpu() - ref).abs().max())
        assert err <= 2e-3 * scale, f"{n}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_attention_computes_in_the_query_dtype(device, dtype):
    """Under autocast the projections give half-precision q, k, v while the iRPE table may
    be float32, and CUDA's autocast runs softmax in float32: the fused path must still
    compute in one dtype, forward and backward (this failed on an H200 before)."""
    torch.manual_seed(0)
    B, H, L, d = 2, 2, 12, 8
    ids = bucket_ids("product", 2.0, 3, 4).to(device)
    pad = torch.zeros(B, L, dtype=torch.bool, device=device)
    pad[1, -3:] = True
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64) for _ in range(3))
    table = torch.randn(B, H, L, 81, dtype=torch.float64)
    ref_in = [t.clone().requires_grad_() for t in (q, k, v, table)]
    ref = fused_attention(*ref_in[:3], ref_in[3], ids.cpu(), pad.cpu())
    ref_grads = torch.autograd.grad(ref.sum(), ref_in)

    inputs = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
    inputs.append(table.to(device, torch.float32).requires_grad_())
    with torch.autocast(device, dtype=dtype):
        out = fused_attention(*inputs, ids, pad)
    out.sum().backward()
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), ref, rtol=0.05, atol=0.05)
    for t, r in zip(inputs, ref_grads):
        assert t.grad.dtype == t.dtype
        torch.testing.assert_close(t.grad.double().cpu(), r, rtol=0.1, atol=0.1)
