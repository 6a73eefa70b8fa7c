"""iRPE: configuration parsing, bucket ids, attention against fixtures and references."""

import itertools
import math

import pytest
import torch
from reference import reference_attention

from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.irpe import (
    IRPEConfig,
    aggregate,
    bucket_ids,
    bucket_map,
    lookup,
    piecewise_index,
)
from detr_irpe.models.irpe_config import parse_irpe

# ---------------------------------------------------------------- configuration strings


def test_parse_paper_config():
    cfg = parse_irpe("rpe-2.0-product-ctx-1-k")
    assert cfg == IRPEConfig(2.0, "product", "ctx", True, "k")
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (2.0, 4.0, 16.0)
    assert cfg.num_buckets == 81
    assert parse_irpe("") is None and parse_irpe(None) is None
    assert parse_irpe("rpe-1.9-cross-bias-0-qk").to_string() == "rpe-1.9-cross-bias-0-qk"


@pytest.mark.parametrize("ratio,buckets", [(1.9, 49), (2.0, 81), (2.5, 121), (3.0, 169)])
def test_product_bucket_counts(ratio, buckets):
    assert IRPEConfig(ratio=ratio).num_buckets == buckets
    assert IRPEConfig(ratio=ratio, method="euc").num_buckets == math.isqrt(buckets)


@pytest.mark.parametrize(
    "bad",
    [
        "rpe-2.0-product-ctx-1",  # missing field
        "rpe-abc-product-ctx-1-k",  # ratio not a number
        "rpe-2.0-prod-ctx-1-k",  # unknown method
        "rpe-2.0-product-context2-1-k",  # unknown mode
        "rpe-2.0-product-ctx-2-k",  # shared_head not 0/1
        "rpe-2.0-product-ctx-1-x",  # rpe_on
        "rpe-2.0-product-bias-1-v",  # bias on values is undefined
        "irpe-2.0-product-ctx-1-k",
        "rpe-0-product-ctx-1-k",  # ratio 0
    ],
)
def test_bad_config_strings_name_the_flag_and_format(bad):
    with pytest.raises(ValueError) as err:
        parse_irpe(bad)
    msg = str(err.value)
    assert "--enc_rpe2d" in msg and bad in msg
    assert "rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}" in msg
    assert "euc|quant|cross|product" in msg


# ---------------------------------------------------------------- bucket ids


def test_piecewise_index_hand_computed():
    # ratio 2.0: alpha 2, beta 4, gamma 16.  |x| <= 2 kept; x = 3:
    # 2 + ln(1.5)/ln(8)*2 = 2.39 -> 2;  x = 5: 2 + ln(2.5)/ln(8)*2 = 2.88 -> 3;
    # x = 10: 2 + ln 5 / ln 8 * 2 = 3.55 -> 4;  x = 100 clipped to beta = 4.
    x = torch.tensor([-100, -10, -5, -3, -2, 0, 1, 2, 3, 5, 10, 100])
    got = piecewise_index(x, 2.0, 4.0, 16.0)
    assert got.tolist() == [-4, -4, -3, -2, -2, 0, 1, 2, 2, 3, 4, 4]
    # ratio 1.9: beta = 3.8, so |g| stops at 3 after truncation toward zero.
    big = piecewise_index(torch.tensor([-1000, 1000]), 1.9, 3.8, 15.2)
    assert big.tolist() == [-3, 3]
    # floats: round half to even inside alpha (2.5 -> 2, 0.5 -> 0).
    assert piecewise_index(torch.tensor([0.5, 1.5, -1.5]), 2.0, 4.0, 16.0).tolist() == [0, 2, -2]


def test_product_bucket_ids_small_grid_by_hand():
    # 2 x 3 map, ratio 2.0: every offset is within alpha, so bucket = (dr+4)*9 + (dc+4).
    ids = bucket_ids("product", 2.0, 2, 3)
    for i, j in itertools.product(range(6), range(6)):
        dr, dc = i // 3 - j // 3, i % 3 - j % 3
        assert ids[i, j] == (dr + 4) * 9 + (dc + 4)


def test_bucket_ids_match_official_fixture(bucket_fixture):
    assert len(bucket_fixture) == 40
    for key, case in bucket_fixture.items():
        method, ratio, hw = key.split("/")
        h, w = map(int, hw.split("x"))
        ids = bucket_ids(method, float(ratio), h, w)
        assert torch.equal(ids, case["ids"].long()), key
        side = 2 * int(2 * float(ratio)) + 1
        assert case["num_buckets"] == (side * side if method == "product" else side)


def test_bucket_map_cache_reuses_and_separates_shapes():
    bucket_map.cache_clear()
    a = bucket_map("product", 2.0, 4, 5, torch.device("cpu"))
    b = bucket_map("product", 2.0, 4, 5, torch.device("cpu"))
    c = bucket_map("product", 2.0, 5, 4, torch.device("cpu"))
    assert a is b and c is not a and c.ids.shape == (20, 20)
    info = bucket_map.cache_info()
    assert info.hits == 1 and info.misses == 2 and info.maxsize is not None


@pytest.mark.parametrize("method", ["product", "euc", "cross_rows"])
def test_lookup_and_aggregate_are_transposes(method):
    # <lookup(T), A> == <T, aggregate(A)> for random T, A, in float64.
    h, w = 4, 6
    bmap = bucket_map(method, 2.0, h, w, torch.device("cpu"))
    n = bmap.num_buckets
    T = torch.randn(2, 3, h * w, n, dtype=torch.float64)
    A = torch.randn(2, 3, h * w, h * w, dtype=torch.float64)
    lhs = (lookup(T, bmap) * A).sum()
    rhs = (T * aggregate(A, bmap)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10)
    # And lookup is a plain gather by bucket id.
    direct = torch.gather(T, -1, bmap.ids.expand(2, 3, -1, -1))
    assert torch.allclose(lookup(T, bmap), direct, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- attention


def _attn_from_case(case, backend):
    cfg = parse_irpe(case["config"])
    attn = IRPEMultiheadAttention(case["embed_dim"], case["num_heads"], 0.0, cfg, backend=backend)
    attn.load_state_dict(case["state_dict"], strict=True)
    return attn.eval()


@pytest.mark.parametrize("backend", ["explicit", "auto", "sdpa", "fused"])
def test_attention_matches_official_golden(golden, backend):
    assert len(golden) == 16
    for key, case in golden.items():
        cfg = parse_irpe(case["config"])
        if backend == "sdpa" and "v" in cfg.rpe_on:
            continue
        if backend == "fused" and (cfg.rpe_on != "k" or cfg.mode != "ctx" or cfg.method == "cross"):
            continue
        attn = _attn_from_case(case, backend)
        out = attn(
            case["query"], case["key"], case["value"], case["key_padding_mask"], (case["h"], case["w"])
        )
        assert out.shape == case["output"].shape
        torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=2e-6, msg=key)


def test_reference_matches_golden(golden):
    # The float64 reference used below agrees with the official outputs too.
    for key, case in golden.items():
        sd = {k: v.double() for k, v in case["state_dict"].items()}
        ref = reference_attention(
            case["query"].double(), case["key"].double(), case["value"].double(), sd,
            case["num_heads"], parse_irpe(case["config"]), case["key_padding_mask"],
            (case["h"], case["w"]),
        )
        torch.testing.assert_close(ref.float(), case["output"], rtol=1e-4, atol=2e-6, msg=key)


ALL_CONFIGS = [
    f"rpe-{r}-{m}-{mode}-{s}-{on}"
    for r, m, mode, s, on in itertools.product(
        ["1.9", "2.5"], ["euc", "quant", "cross", "product"], ["bias", "ctx"], [0, 1],
        ["q", "k", "v", "qk", "qkv", "kv"],
    )
    if not (mode == "bias" and "v" in on)
]


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_every_configuration_matches_float64_reference(config):
    torch.manual_seed(hash(config) % 2**31)
    h, w, E, H, B = 3, 5, 16, 2, 2
    cfg = parse_irpe(config)
    attn = IRPEMultiheadAttention(E, H, 0.0, cfg).double().eval()
    with torch.no_grad():  # non-zero tables, otherwise iRPE is invisible
        for name, p in attn.named_parameters():
            if "rpe_" in name:
                p.normal_()
    L = h * w
    q, k, v = (torch.randn(L, B, E, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[1].view(h, w)[:, 3:] = True  # image 1 padded on the right
    mask[1].view(h, w)[2:, :] = True  # ... and at the bottom
    out = attn(q, k, v, mask, (h, w))
    sd = {n: p.detach() for n, p in attn.state_dict().items()}
    ref = reference_attention(q, k, v, sd, H, cfg, mask, (h, w))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", ["rpe-2.0-product-ctx-0-qkv", "rpe-1.9-cross-ctx-1-qk",
                                    "rpe-2.0-quant-bias-0-qk", "rpe-2.0-euc-ctx-1-kv"])
def test_table_gradients_gradcheck(config):
    torch.manual_seed(0)
    h, w, E, H = 2, 3, 8, 2
    cfg = parse_irpe(config)
    attn = IRPEMultiheadAttention(E, H, 0.0, cfg).double().eval()
    q, k, v = (torch.randn(h * w, 1, E, dtype=torch.float64) for _ in range(3))
    tables = [(n, p) for n, p in attn.named_parameters() if "rpe_" in n]
    assert tables

    def f(*ts):
        for (n, _), t in zip(tables, ts):
            mod, _, attr = n.rpartition(".")
            delattr(attn.get_submodule(mod), attr)
            setattr(attn.get_submodule(mod), attr, t)
        return attn(q, k, v, None, (h, w))

    inputs = tuple(torch.randn_like(p, requires_grad=True) for _, p in tables)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["explicit", "sdpa", "fused"])
def test_no_irpe_equals_torch_multihead_attention(backend):
    torch.manual_seed(0)
    E, H, L, S, B = 32, 4, 7, 11, 3
    ours = IRPEMultiheadAttention(E, H, 0.0, None, backend=backend).eval()
    ref = torch.nn.MultiheadAttention(E, H, dropout=0.0).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    q, k, v = torch.randn(L, B, E), torch.randn(S, B, E), torch.randn(S, B, E)
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[1, 8:] = True
    expected, _ = ref(q, k, v, key_padding_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(q, k, v, mask), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config,backend", [("rpe-2.0-product-ctx-1-qk", "sdpa"),
                                            ("rpe-2.0-product-ctx-1-k", "fused"),
                                            ("rpe-1.9-euc-ctx-0-k", "fused"),
                                            ("", "fused"), ("", "sdpa")])
def test_backends_agree_on_gradients(config, backend):
    torch.manual_seed(1)
    cfg = parse_irpe(config)
    a = IRPEMultiheadAttention(16, 2, 0.0, cfg, backend="explicit").double()
    b = IRPEMultiheadAttention(16, 2, 0.0, cfg, backend=backend).double()
    with torch.no_grad():
        for p in a.parameters():
            p.normal_()
    b.load_state_dict(a.state_dict())
    x = torch.randn(12, 2, 16, dtype=torch.float64)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, -3:] = True
    a(x, x, x, mask, (3, 4)).square().sum().backward()
    b(x, x, x, mask, (3, 4)).square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-9, msg=n)


def test_irpe_needs_feature_map_size():
    attn = IRPEMultiheadAttention(16, 2, 0.0, parse_irpe("rpe-2.0-product-ctx-1-k"))
    x = torch.randn(12, 1, 16)
    with pytest.raises(ValueError, match="hw"):
        attn(x, x, x, None, None)
    with pytest.raises(ValueError, match="hw"):
        attn(x, x, x, None, (5, 5))


def test_fused_dropout_matches_explicit_dropout_pattern():
    """With dropout, the fused backward must use the same keep-mask as its forward:
    compare with autograd on the same mask (captured by seeding)."""
    from detr_irpe.models.fused_attention import fused_attention

    torch.manual_seed(0)
    B, H, L, d, n = 2, 2, 12, 4, 81
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    T = torch.randn(B, H, L, n, dtype=torch.float64, requires_grad=True)
    ids = bucket_ids("product", 2.0, 3, 4)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, -2:] = True
    torch.manual_seed(7)
    out = fused_attention(q, k, v, T, ids, pad, 0.3)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v, T))
    torch.manual_seed(7)
    logits = q @ k.transpose(-2, -1) + torch.gather(T, -1, ids.expand(B, H, L, L))
    logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
    draws = torch.empty(B * H, L, L, dtype=torch.int16).random_(-32768, 32768)
    keep = (draws.view(B, H, L, L).double() + 32768) / 65536 >= 0.3  # uniform on [0, 1)
    assert 0 < (~keep).sum() < keep.numel()
    ref = logits.softmax(-1) * keep / 0.7 @ v
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v, T))):
        torch.testing.assert_close(g, r)


def test_fused_dropout_drops_each_element_with_probability_p():
    """The keep-mask of the fused path: rate 1 - p within 5 standard errors over 4 M draws,
    no structure across rows, and a fresh mask on every call."""
    from detr_irpe.models.fused_attention import dropout_keep_mask

    torch.manual_seed(0)
    for p in (0.1, 0.5):
        keep = dropout_keep_mask((4, 1000, 1000), p, "cpu").double()
        n = keep.numel()
        assert abs(keep.mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
        rows = keep.mean(-1).flatten()
        assert rows.std().item() < 5 * (p * (1 - p) / 1000) ** 0.5
    assert not torch.equal(dropout_keep_mask((64, 64), 0.1, "cpu"),
                           dropout_keep_mask((64, 64), 0.1, "cpu"))


def test_fused_gradcheck_float64():
    from detr_irpe.models.fused_attention import fused_attention

    torch.manual_seed(0)
    B, H, L, d = 1, 2, 6, 3
    ids = bucket_ids("product", 1.9, 2, 3)
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    T = torch.randn(B, H, L, 49, dtype=torch.float64, requires_grad=True)
    pad = torch.tensor([[False, False, False, False, True, True]])
    assert torch.autograd.gradcheck(lambda *a: fused_attention(*a, ids, pad, 0.0), (q, k, v, T))


def test_bucket_map_made_in_inference_mode_serves_training():
    bucket_map.cache_clear()
    with torch.inference_mode():
        bucket_map("product", 2.0, 3, 4, torch.device("cpu"))
    attn = IRPEMultiheadAttention(16, 2, 0.0, parse_irpe("rpe-2.0-product-ctx-1-k"))
    x = torch.randn(12, 1, 16, requires_grad=True)
    attn(x, x, x, None, (3, 4)).sum().backward()  # would fail on an inference-mode id tensor
    assert x.grad is not None
