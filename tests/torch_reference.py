#!/usr/bin/python3
"""torch_reference.py - an independent PyTorch implementation of the schemes
in models/, to check Strata's loss and gradients beyond finite differences.

Usage: torch_reference.py POINT.json [--tol X]
POINT.json comes from `strata gradcheck MODEL --export POINT.json`: the model
file, its resolved config, the batch (tokens, targets, loss mask), every
parameter by its Strata name, and Strata's loss and gradients (fp64 reference
interpreter).  This script rebuilds the same model by hand, written from the
papers (not from Strata's IR), runs it in float64 with torch.autograd, and
compares.  Exit 0 if loss and every gradient agree within --tol (relative to
the largest magnitude of each tensor), 1 if not, 77 if torch is missing.
"""
import json
import math
import os
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_reference: python3-torch is not installed; skipping")
    sys.exit(77)


def rmsnorm(x, g, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope(x, heads, base, T):
    """LLaMA/GPT-NeoX layout: within each head, pairs (i, i + hd/2)."""
    B, _, W = x.shape
    hd = W // heads
    half = hd // 2
    t = torch.arange(T, dtype=torch.float64)
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = t[:, None] * inv[None, :]                      # (T, half)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x = x.view(B, T, heads, hd)
    a, b = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1).view(B, T, W)


def attention(x, p, pre, heads, base, T):
    B, _, W = x.shape
    hd = W // heads
    q = rope(x @ p[pre + ".wq"].T, heads, base, T)
    k = rope(x @ p[pre + ".wk"].T, heads, base, T)
    v = x @ p[pre + ".wv"].T
    q, k, v = (z.view(B, T, heads, hd).transpose(1, 2) for z in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    s = s.masked_fill(causal, float("-inf"))
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, W)
    return o @ p[pre + ".wo"].T


def swiglu(x, p, pre):
    return (F.silu(x @ p[pre + ".w1"].T) * (x @ p[pre + ".w3"].T)) @ p[pre + ".w2"].T


def forward(scheme, p, cfg, tokens, targets, mask, T):
    L, heads, base = int(cfg["L"]), int(cfg["heads"]), cfg.get("rope", 10000.0)
    x = p["tok_embeddings"][tokens]
    norm = lambda z, name: rmsnorm(z, p[name + ".g"])
    if scheme == "dyt":
        norm = lambda z, name: p[name + ".g"] * torch.tanh(p[name + ".a"] * z) + p[name + ".b"]
    for l in range(1, L + 1):
        pre = "layers.%d." % l
        attn = lambda z: attention(z, p, pre + "attn", heads, base, T)
        mlp = lambda z: swiglu(z, p, pre + "mlp")
        post = scheme == "post_ln" or (scheme == "mix_ln" and l <= math.floor(0.25 * L))
        if scheme == "deepnorm":
            alpha = (2 * L) ** 0.25
            x = norm(x * alpha + attn(x), pre + "attn_norm")
            x = norm(x * alpha + mlp(x), pre + "mlp_norm")
        elif post:
            x = norm(x + attn(x), pre + "attn_norm")
            x = norm(x + mlp(x), pre + "mlp_norm")
        elif scheme == "peri_ln":
            x = x + norm(attn(norm(x, pre + "attn_norm")), pre + "attn_out_norm")
            x = x + norm(mlp(norm(x, pre + "mlp_norm")), pre + "mlp_out_norm")
        elif scheme == "layerscale":
            x = x + p[pre + "attn_scale"] * attn(norm(x, pre + "attn_norm"))
            x = x + p[pre + "mlp_scale"] * mlp(norm(x, pre + "mlp_norm"))
        else:
            s1 = s2 = 1.0
            if scheme in ("lns", "dyt"):
                s1 = s2 = 1 / math.sqrt(l)
            elif scheme == "learned_depth_scale":
                s1, s2 = p[pre + "attn_depth_scale"], p[pre + "mlp_depth_scale"]
            x = x + attn(norm(x, pre + "attn_norm") * s1)
            x = x + mlp(norm(x, pre + "mlp_norm") * s2)
    # pre_ln_tied: the head is the embedding table (torch adds both uses' gradients).
    head = p["tok_embeddings"] if scheme == "pre_ln_tied" else p["output"]
    logits = norm(x, "norm") @ head.T
    V = logits.shape[-1]
    rows = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    count = mask.sum()
    return (rows * mask).sum() / count if count > 0 else rows.sum() * 0


def main():
    path = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-9
    with open(path) as f:
        pt = json.load(f)
    scheme = os.path.splitext(os.path.basename(pt["model"]))[0]
    B, T = pt["B"], pt["T"]
    p = {}
    for name, e in pt["params"].items():
        t = torch.tensor(e["data"], dtype=torch.float64).reshape(e["shape"] if e["shape"] else [])
        p[name] = t.requires_grad_(True)
    tokens = torch.tensor(pt["tokens"]).reshape(B, T)
    targets = torch.tensor(pt["targets"]).reshape(B, T)
    mask = torch.tensor(pt["mask"], dtype=torch.float64)
    loss = forward(scheme, p, pt["config"], tokens, targets, mask, T)
    loss.backward()
    worst, worst_name = abs(loss.item() - pt["loss"]) / max(abs(loss.item()), 1e-30), "loss"
    print("%s: loss torch %.15g strata %.15g" % (scheme, loss.item(), pt["loss"]))
    for name, t in p.items():
        ref = t.grad.reshape(-1) if t.grad is not None else torch.zeros(t.numel(), dtype=torch.float64)
        got = torch.tensor(pt["grads"].get(name, [0.0] * t.numel()), dtype=torch.float64)
        scale = max(ref.abs().max().item(), 1e-30)
        err = (ref - got).abs().max().item() / scale
        if err > worst:
            worst, worst_name = err, name
    verdict = "PASS" if worst <= tol else "FAIL"
    print("%s: worst relative difference %.3e (%s), tolerance %.0e: %s" % (scheme, worst, worst_name, tol, verdict))
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
