#!/usr/bin/python3
"""torch_gpu_bench.py - PyTorch's side of bench/gpu-check's throughput part
(issue #18): training steps of the LLaMA architecture of models/pre_ln.strata
(RMSNorm eps 1e-6 with a gain, RoPE base 10000 in the half-split layout,
SwiGLU, untied head, no biases) on a GPU with bf16 autocast, fp32 master
weights, clip_grad_norm_(1.0) and AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on matrices), timed after warm-up steps with the device
synchronised.  The attention is scaled_dot_product_attention (causal) where
torch has it (the flash kernels on a GPU), else masked softmax.

Usage: torch_gpu_bench.py [--preset llama-71m|llama-130m | --d D --L L
         --heads H --ffn F] [--vocab V] [--batch B] [--seq T] [--steps K]
         [--warmup W] [--device cuda|cpu] [--fp32] [--flops-per-token F]
         [--peak-tflops P] [--compile]
Prints the configuration, then "result tokens_per_s=... mfu=... step_ms=...
loss0=... loss=...".  MFU = tokens/s x F / (P x 1e12); F defaults to
6 N + 12 L d T (N the parameters but the embedding table; bench/gpu-check
passes Strata's own count from `strata check`, so both sides use one
number), P to 989 (H100/H200 SXM dense bf16).  Exit 0, 1 failed, 2 usage,
77 when torch (or the device) is missing.
"""
import argparse
import math
import sys
import time

PRESETS = {"llama-71m": (512, 1368, 8, 12), "llama-130m": (768, 2048, 12, 12)}  # d, ffn, heads, L (sema.c)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="torch_gpu_bench.py")
    p.add_argument("--preset", choices=sorted(PRESETS))
    for name, default in (("d", 512), ("L", 12), ("heads", 8), ("ffn", 1368), ("vocab", 32000), ("seq", 256),
                          ("batch", 64), ("steps", 20), ("warmup", 5)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--device", default="cuda")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--flops-per-token", type=float, default=0.0)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slower start)")
    a = p.parse_args(argv)
    if a.preset:
        a.d, a.ffn, a.heads, a.L = PRESETS[a.preset]
    if min(a.d, a.L, a.heads, a.ffn, a.vocab, a.seq, a.batch, a.steps) < 1 or a.warmup < 0:
        p.error("sizes and --steps must be positive, --warmup not negative")
    if a.d % a.heads or (a.d // a.heads) % 2:
        p.error("d must be a multiple of heads with an even head size")
    return a


def main(argv):
    a = parse_args(argv)
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print("torch_gpu_bench: torch is not installed; skipping")
        return 77
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch_gpu_bench: torch sees no CUDA device; skipping")
        return 77
    dev = torch.device(a.device)
    torch.manual_seed(0)
    d, L, H, T, B, V = a.d, a.L, a.heads, a.seq, a.batch, a.vocab
    hd, half = d // H, d // H // 2
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    def rmsnorm(x, g):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * g

    inv = 10000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang).float().to(dev), torch.sin(ang).float().to(dev)  # (T, hd/2)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).triu(1)

    def rope(x):                                                              # (B, H, T, hd)
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = nn.Parameter(torch.ones(d))
            self.wqkv = nn.Linear(d, 3 * d, bias=False)
            self.wo = nn.Linear(d, d, bias=False)
            self.mlp_norm = nn.Parameter(torch.ones(d))
            self.w13 = nn.Linear(d, 2 * a.ffn, bias=False)
            self.w2 = nn.Linear(a.ffn, d, bias=False)

        def forward(self, x):                                                 # (B, T, d)
            h = rmsnorm(x, self.attn_norm)
            q, k, v = self.wqkv(h).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (B, H, T, hd) each
            q, k = rope(q), rope(k)
            if sdpa is not None:
                o = sdpa(q, k, v, is_causal=True)
            else:
                att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
                o = torch.softmax(att.masked_fill(causal, float("-inf")), dim=-1) @ v
            x = x + self.wo(o.transpose(1, 2).reshape(B, T, d))
            g, u = self.w13(rmsnorm(x, self.mlp_norm)).chunk(2, dim=-1)      # (B, T, ffn) each
            return x + self.w2(F.silu(g) * u)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(V, d)
            self.layers = nn.ModuleList(Block() for _ in range(L))
            self.norm = nn.Parameter(torch.ones(d))
            self.output = nn.Linear(d, V, bias=False)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, tokens, targets):                                   # (B, T) each
            x = self.tok_embeddings(tokens)
            for blk in self.layers:
                x = blk(x)
            logits = self.output(rmsnorm(x, self.norm))                       # (B, T, V)
            return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))

    model = Model().to(dev)
    step_model = torch.compile(model) if a.compile and hasattr(torch, "compile") else model
    n_params = sum(p.numel() for p in model.parameters())
    n_nonemb = n_params - model.tok_embeddings.weight.numel()
    fpt = a.flops_per_token or 6.0 * n_nonemb + 12.0 * L * d * T
    matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in n]
    others = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embeddings" not in n)]
    kw = {"lr": 3e-4, "betas": (0.9, 0.95), "eps": 1e-8}
    groups = [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, fused=dev.type == "cuda", **kw)
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(groups, **kw)
    tokens = torch.randint(0, V, (B, T), device=dev)
    targets = torch.randint(0, V, (B, T), device=dev)
    bf16 = not a.fp32

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print("torch %s on %s, LLaMA d %d L %d heads %d ffn %d vocab %d (%.1fM parameters), batch %d x %d, %s, "
          "attention %s, %d warm-up + %d steps"
          % (torch.__version__, torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", d, L, H, a.ffn, V,
             n_params / 1e6, B, T, "bf16 autocast" if bf16 else "fp32", "sdpa" if sdpa else "masked softmax",
             a.warmup, a.steps))
    losses, t0 = [], None
    for k in range(a.warmup + a.steps):
        if k == a.warmup:
            sync()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if k == 0 or k == a.warmup + a.steps - 1:
            losses.append(loss.item())
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    tps = B * T / dt
    mfu = tps * fpt / (a.peak_tflops * 1e12)
    print("result tokens_per_s=%.0f mfu=%.4f step_ms=%.2f flops_per_token=%.4g loss0=%.4f loss=%.4f"
          % (tps, mfu, 1e3 * dt, fpt, losses[0], losses[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
