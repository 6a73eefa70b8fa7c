"""A freshly built model starts, tensor by tensor, from the official run's distributions.

The expected distribution of each name is written here from the official recipe
(docs/irpe.md section 6), not read from our code: the official Transformer applies
Xavier-uniform to every parameter of more than one dimension after building everything,
iRPE tables included; nn.MultiheadAttention zeroes its projection biases; nn.Linear and
nn.Conv2d keep torch's defaults; nn.Embedding is N(0, 1); torchvision's ResNet draws its
convolutions from Kaiming-normal (fan_out) and DETR's frozen batch norms hold identity
statistics.
"""

import math
import re

import pytest
import torch
from helpers import tiny_config

import detr_irpe


def _fans(shape):
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _xavier_bound(shape):
    fan_in, fan_out = _fans(shape)
    return math.sqrt(6.0 / (fan_in + fan_out))


def _expected(name, shape, linear_fan_in):
    """(family, scale) of the official initial value of ``name``."""
    if name.startswith("transformer."):
        if len(shape) > 1:
            return "uniform", _xavier_bound(shape)
        if name.endswith(("in_proj_bias", "out_proj.bias")) or re.search(r"norm\d?\.bias$", name):
            return "const", 0.0
        if re.search(r"norm\d?\.weight$", name):
            return "const", 1.0
        if re.search(r"linear\d\.bias$", name):
            return "uniform", 1 / math.sqrt(linear_fan_in[name[: -len(".bias")]])
    if name == "query_embed.weight":
        return "normal", 1.0
    if re.match(r"(class_embed|bbox_embed\.layers\.\d|input_proj)\.(weight|bias)$", name):
        return "uniform", 1 / math.sqrt(linear_fan_in[name.rsplit(".", 1)[0]])
    if name.startswith("backbone.0.body."):
        if len(shape) == 4:  # torchvision: kaiming_normal_(mode="fan_out", relu)
            return "normal", math.sqrt(2.0 / _fans(shape)[1])
        if name.endswith(("weight", "running_var")):
            return "const", 1.0
        if name.endswith(("bias", "running_mean")):
            return "const", 0.0
    raise AssertionError(f"no official rule for {name} {tuple(shape)}")


def _check(name, t, family, scale):
    t = t.double().flatten()
    if family == "const":
        assert torch.all(t == scale), name
        return
    if family == "uniform":
        assert t.abs().max() <= scale * (1 + 1e-6), name
        if t.numel() >= 500:  # large enough for the statistics to be sharp
            assert t.abs().max() >= 0.95 * scale, name
            assert t.std() == pytest.approx(scale / math.sqrt(3), rel=0.1), name
        return
    if t.numel() >= 500:
        assert abs(t.mean()) < 0.1 * scale, name
        assert t.std() == pytest.approx(scale, rel=0.1), name


def _linear_fan_in(model):
    return {n: m.weight[0].numel() for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


@pytest.mark.parametrize("enc", ["rpe-2.0-product-ctx-1-k", "rpe-2.0-quant-bias-0-qk",
                                 "rpe-1.9-cross-ctx-1-v"])
def test_fresh_model_matches_official_initial_distributions(enc):
    torch.manual_seed(0)
    model, _, _ = detr_irpe.build_detr(enc_rpe2d=enc, pretrained_backbone="none")
    fan_in = _linear_fan_in(model)
    tables = 0
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        family, scale = _expected(name, t.shape, fan_in)
        _check(name, t, family, scale)
        tables += ".rpe_" in name
    assert tables >= 6  # every encoder layer's tables were checked


def test_paper_table_bound():
    """The paper's ctx table (1, 32, 81) is uniform within +-0.047, and not zero."""
    model, _, _ = detr_irpe.build_detr(pretrained_backbone="none")
    table = model.transformer.encoder.layers[0].self_attn.rpe_k.lookup_table_weight
    assert table.shape == (1, 32, 81)
    assert 0.045 < float(table.detach().abs().max()) <= 0.0474


def test_zero_init_option_starts_as_plain_detr():
    """irpe_init='zero': every table is zero, and the model computes what a plain DETR
    with the same remaining weights computes."""
    opts = tiny_config(nheads=4, enc_layers=2, num_queries=5, num_classes=3)
    torch.manual_seed(0)
    irpe, _, _ = detr_irpe.build_detr(enc_rpe2d="rpe-2.0-product-ctx-1-qkv", irpe_init="zero",
                                      **opts)
    tables = {n: p for n, p in irpe.named_parameters() if ".rpe_" in n}
    assert len(tables) == 6 and all(torch.all(p == 0) for p in tables.values())
    plain, _, _ = detr_irpe.build_detr(enc_rpe2d="", **opts)
    plain.load_state_dict({n: t for n, t in irpe.state_dict().items() if ".rpe_" not in n})
    images = [torch.randn(3, 64, 80), torch.randn(3, 48, 96)]
    a, b = irpe.eval()(images), plain.eval()(images)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=0, atol=1e-6)
    # The default (xavier) tables change the output.
    torch.manual_seed(0)
    xavier, _, _ = detr_irpe.build_detr(enc_rpe2d="rpe-2.0-product-ctx-1-qkv", **opts)
    xavier.load_state_dict({**irpe.state_dict(), **{n: p for n, p in xavier.state_dict().items()
                                                     if ".rpe_" in n}})
    assert not torch.allclose(xavier.eval()(images)["pred_logits"], a["pred_logits"], atol=1e-4)


def test_bad_irpe_init_is_refused():
    with pytest.raises(ValueError, match="irpe_init"):
        detr_irpe.build_detr(irpe_init="normal", pretrained_backbone="none")
