"""Independent, slow reference implementations used by the tests.

Written straight from docs/irpe.md section 4 with explicit per-token loops, in float64,
sharing nothing with the fast paths except the bucket-id function (itself tested
against the official fixtures).
"""

import math

import torch
from torch import Tensor

from detr_irpe.models.irpe import IRPEConfig, bucket_ids


def reference_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    params: dict[str, Tensor],
    num_heads: int,
    irpe: IRPEConfig | None,
    key_padding_mask: Tensor | None,
    hw: tuple[int, int],
) -> Tensor:
    """Slow, literal implementation of docs/irpe.md section 4 with explicit loops over
    buckets; used by the tests as an independent float64 reference (no dropout)."""
    L, B, E = query.shape
    d = E // num_heads
    s = d**-0.5
    w_q, w_k, w_v = params["in_proj_weight"].chunk(3)
    b_q, b_k, b_v = params["in_proj_bias"].chunk(3)

    def heads(x, wt, bs):
        return (x @ wt.T + bs).view(L, B, num_heads, d).permute(1, 2, 0, 3)

    q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
    logits = torch.einsum("bhid,bhjd->bhij", s * q, k)
    out_extra = torch.zeros_like(q)

    def maps():
        if irpe.method == "cross":
            return [("rp_rows.", "cross_rows"), ("rp_cols.", "cross_cols")]
        return [("", irpe.method)]

    def table(where, prefix, name):
        t = params[f"rpe_{where}.{prefix}{name}"]
        return t if t.shape[0] == num_heads else t.expand(num_heads, *t.shape[1:])

    if irpe is not None:
        for where in irpe.rpe_on:
            if where == "v":
                continue
            for prefix, method in maps():
                ids = bucket_ids(method, irpe.ratio, *hw)
                x = s * q if where == "k" else s * k
                if irpe.mode == "ctx":
                    W = table(where, prefix, "lookup_table_weight")  # (H, d, n)
                    full = torch.einsum("bhid,hdn->bhin", x, W)
                    term = torch.stack(
                        [full[:, :, i, ids[i]] for i in range(L)], dim=2
                    )  # (B, H, L, L): term[i, j] = x_i . W[:, ids[i, j]]
                else:
                    Bt = table(where, prefix, "lookup_table_bias")  # (H, n)
                    term = Bt[:, ids].unsqueeze(0).expand(B, -1, -1, -1)
                logits = logits + (term if where == "k" else term.transpose(-2, -1))
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
    attn = logits.softmax(-1)
    out = attn @ v
    if irpe is not None and "v" in irpe.rpe_on:
        for prefix, method in maps():
            ids = bucket_ids(method, irpe.ratio, *hw)
            W = table("v", prefix, "lookup_table_weight")  # (H, n, d)
            for i in range(L):
                # sum_j attn[b, h, i, j] * W[h, ids[i, j], :]
                out_extra[:, :, i] += torch.einsum("bhj,hjd->bhd", attn[:, :, i], W[:, ids[i]])
    out = out + out_extra
    out = out.permute(2, 0, 1, 3).reshape(L, B, E)
    return out @ params["out_proj.weight"].T + params["out_proj.bias"]


def _mha(q_in, k_in, v_in, sd, prefix, num_heads, mask):
    """torch's own functional multi-head attention on our parameter names."""
    E = q_in.shape[-1]
    out, _ = torch.nn.functional.multi_head_attention_forward(
        q_in, k_in, v_in, E, num_heads,
        sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"], None, None, False, 0.0,
        sd[prefix + "out_proj.weight"], sd[prefix + "out_proj.bias"],
        training=False, key_padding_mask=mask, need_weights=False,
    )
    return out


def _ln(x, sd, prefix):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"])


def _lin(x, sd, prefix):
    return x @ sd[prefix + "weight"].T + sd[prefix + "bias"]


def sine_position_reference(mask: Tensor, num_feats: int) -> Tensor:
    """DETR's sine embedding written per channel: (B, 2F, H, W), channels [y..., x...]."""
    B, H, W = mask.shape
    valid = (~mask).double()
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    chans = []
    for coord in (y, x):
        for c in range(num_feats):
            freq = 10000 ** (2 * (c // 2) / num_feats)
            chans.append(torch.sin(coord / freq) if c % 2 == 0 else torch.cos(coord / freq))
    return torch.stack(chans, dim=1)


def reference_detr(sd: dict, images: list, opts: dict) -> dict:
    """DETR forward (eval mode) from the spec, on a state dict, in the dtype of ``sd``.

    opts: backbone, hidden_dim, nheads, enc_layers, dec_layers, pre_norm, irpe (IRPEConfig
    or None), dilation.  Sine position embedding only.
    """
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    dtype = next(iter(sd.values())).dtype
    H = max(i.shape[1] for i in images)
    W = max(i.shape[2] for i in images)
    B = len(images)
    x = torch.zeros(B, 3, H, W, dtype=dtype)
    mask = torch.ones(B, H, W, dtype=torch.bool)
    for n, img in enumerate(images):
        x[n, :, : img.shape[1], : img.shape[2]] = img
        mask[n, : img.shape[1], : img.shape[2]] = False

    net = getattr(torchvision.models, opts["backbone"])(
        weights=None, norm_layer=FrozenBatchNorm2d,
        replace_stride_with_dilation=[False, False, opts.get("dilation", False)],
    )
    body = {k[len("backbone.0.body."):]: v for k, v in sd.items() if k.startswith("backbone.0.body.")}
    net.load_state_dict(body, strict=False)
    net = net.to(dtype).eval()
    f = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    f = net.layer4(net.layer3(net.layer2(net.layer1(f))))
    h, w = f.shape[-2:]
    fmask = torch.nn.functional.interpolate(mask[None].double(), size=(h, w))[0].bool()
    D, nh = opts["hidden_dim"], opts["nheads"]
    pos = sine_position_reference(fmask, D // 2).to(dtype).flatten(2).permute(2, 0, 1)
    src = torch.nn.functional.conv2d(f, sd["input_proj.weight"], sd["input_proj.bias"])
    src = src.flatten(2).permute(2, 0, 1)  # (hw, B, D)
    kpm = fmask.flatten(1)
    pre = opts["pre_norm"]
    irpe = opts["irpe"]

    def self_attn(q_in, v_in, prefix):
        if irpe is None:
            return _mha(q_in, q_in, v_in, sd, prefix, nh, kpm)
        params = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        return reference_attention(q_in, q_in, v_in, params, nh, irpe, kpm, (h, w))

    def ffn(t, p):
        return _lin(torch.relu(_lin(t, sd, p + "linear1.")), sd, p + "linear2.")

    for n in range(opts["enc_layers"]):
        p = f"transformer.encoder.layers.{n}."
        if pre:
            t = _ln(src, sd, p + "norm1.")
            src = src + self_attn(t + pos, t, p + "self_attn.")
            src = src + ffn(_ln(src, sd, p + "norm2."), p)
        else:
            src = _ln(src + self_attn(src + pos, src, p + "self_attn."), sd, p + "norm1.")
            src = _ln(src + ffn(src, p), sd, p + "norm2.")
    if pre:
        src = _ln(src, sd, "transformer.encoder.norm.")
    memory = src
    qpos = sd["query_embed.weight"][:, None, :].expand(-1, B, -1)
    tgt = torch.zeros_like(qpos)
    hs = []
    for n in range(opts["dec_layers"]):
        p = f"transformer.decoder.layers.{n}."
        if pre:
            t = _ln(tgt, sd, p + "norm1.")
            tgt = tgt + _mha(t + qpos, t + qpos, t, sd, p + "self_attn.", nh, None)
            t = _ln(tgt, sd, p + "norm2.")
            tgt = tgt + _mha(t + qpos, memory + pos, memory, sd, p + "multihead_attn.", nh, kpm)
            tgt = tgt + ffn(_ln(tgt, sd, p + "norm3."), p)
        else:
            a = _mha(tgt + qpos, tgt + qpos, tgt, sd, p + "self_attn.", nh, None)
            tgt = _ln(tgt + a, sd, p + "norm1.")
            a = _mha(tgt + qpos, memory + pos, memory, sd, p + "multihead_attn.", nh, kpm)
            tgt = _ln(tgt + a, sd, p + "norm2.")
            tgt = _ln(tgt + ffn(tgt, p), sd, p + "norm3.")
        hs.append(_ln(tgt, sd, "transformer.decoder.norm.").transpose(0, 1))
    logits = [_lin(t, sd, "class_embed.") for t in hs]
    boxes = []
    for t in hs:
        t = torch.relu(_lin(t, sd, "bbox_embed.layers.0."))
        t = torch.relu(_lin(t, sd, "bbox_embed.layers.1."))
        boxes.append(_lin(t, sd, "bbox_embed.layers.2.").sigmoid())
    return {
        "pred_logits": logits[-1], "pred_boxes": boxes[-1],
        "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])],
    }


def reference_set_losses(out: dict, targets: list, indices: list, num_classes: int,
                         eos_coef: float, num_boxes: float) -> dict:
    """DETR's losses of one decoder layer, written as the official code does them: weighted
    cross-entropy over (B, C+1, Q), L1 and the diagonal of the full pairwise GIoU matrix
    of the matched boxes, the cardinality error; ``indices`` per image (queries, targets)."""
    import torch.nn.functional as F
    from torchvision.ops import box_convert, generalized_box_iou

    logits, boxes = out["pred_logits"], out["pred_boxes"]
    batch = torch.cat([torch.full_like(i, n) for n, (i, _) in enumerate(indices)])
    query = torch.cat([i for i, _ in indices])
    labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
    classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64)
    classes[batch, query] = labels
    weight = torch.ones(num_classes + 1)
    weight[-1] = eos_coef
    src = boxes[batch, query]
    tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
    giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"),
                                          box_convert(tgt, "cxcywh", "xyxy")))
    counts = torch.tensor([float(len(t["labels"])) for t in targets])
    predicted = (logits.argmax(-1) != num_classes).sum(1).float()
    return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), classes, weight),
            "loss_bbox": (src - tgt).abs().sum() / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
            "cardinality_error": F.l1_loss(predicted, counts)}
