#!/usr/bin/python3
"""torch_train_bench.py - the PyTorch side of bench/train-vs-torch: full fp32
training steps of the LLaMA architecture of models/pre_ln.strata and
models/lns.strata (RMSNorm eps 1e-6 with a gain, RoPE base 10000 in the
GPT-NeoX half-split layout, SwiGLU, untied head, no biases; LNS multiplies
every norm output inside block l by 1/sqrt(l)), timed as bench/train_bench.c
times Strata: zero_grad + forward + backward + clip_grad_norm_(1.0) +
AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only).
To give PyTorch its best, q/k/v are one fused matmul and so are w1/w3 (the
same function as separate ones).  Attention is the plain masked-softmax one:
torch 1.13 has no scaled_dot_product_attention.

Usage: torch_train_bench.py [--model pre_ln|lns] [--d D --L L --heads H
         --ffn F --vocab V --seq T --batch B] [--steps K] [--warmup W]
         [--combos T,O ...]
Tries each thread combination T,O (torch.set_num_threads / OMP_NUM_THREADS
= T, OPENBLAS_NUM_THREADS = O; default 1,1 1,2 2,1 2,2) in its own
subprocess, since OpenBLAS reads its variable when it is loaded, and
reports the best by median step time.  The last line, "result key=value
...", is for bench/train-vs-torch.  Exit 0, 1 if every combination failed,
2 usage, 77 if torch is not installed.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(prog="torch_train_bench.py")
    p.add_argument("--model", default="pre_ln", help="pre_ln or lns (or a path to one of those files)")
    for name, default in (("d", 512), ("L", 12), ("heads", 8), ("ffn", 1368), ("vocab", 32000), ("seq", 256),
                          ("batch", 4), ("steps", 5), ("warmup", 2)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--combos", nargs="+", default=["1,1", "1,2", "2,1", "2,2"],
                   help="thread combinations TORCH,OPENBLAS to try")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast of the forward (torch.autocast on the CPU), fp32 master weights and AdamW")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.scheme = os.path.splitext(os.path.basename(a.model))[0]
    if a.scheme not in ("pre_ln", "lns"):
        p.error("--model: %s is neither pre_ln nor lns" % a.model)
    if min(a.d, a.L, a.heads, a.ffn, a.vocab, a.seq, a.batch, a.steps) < 1 or a.warmup < 0:
        p.error("sizes and --steps must be positive, --warmup not negative")
    if a.d % a.heads or (a.d // a.heads) % 2:
        p.error("d must be a multiple of heads with an even head size")
    for c in a.combos:
        parts = c.split(",")
        if len(parts) != 2 or not all(x.isdigit() and int(x) > 0 for x in parts):
            p.error("--combos: %r is not TORCH,OPENBLAS thread counts" % c)
    return a


def worker(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    d, L, H, T, B, V = a.d, a.L, a.heads, a.seq, a.batch, a.vocab
    hd, half = d // H, d // H // 2

    def rmsnorm(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g

    inv = 10000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang).float(), torch.sin(ang).float()       # (T, hd/2)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)

    def rope(x):                                                      # (B, H, T, hd)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = nn.Parameter(torch.ones(d))
            self.wqkv = nn.Linear(d, 3 * d, bias=False)
            self.wo = nn.Linear(d, d, bias=False)
            self.mlp_norm = nn.Parameter(torch.ones(d))
            self.w13 = nn.Linear(d, 2 * a.ffn, bias=False)
            self.w2 = nn.Linear(a.ffn, d, bias=False)

        def forward(self, x, s):                                      # (B, T, d)
            h = rmsnorm(x, self.attn_norm)
            if s != 1.0:
                h = h * s
            q, k, v = self.wqkv(h).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (B, H, T, hd) each
            att = (rope(q) @ rope(k).transpose(-1, -2)) * (1.0 / math.sqrt(hd))  # (B, H, T, T)
            att = torch.softmax(att.masked_fill(causal, float("-inf")), dim=-1)
            x = x + self.wo((att @ v).transpose(1, 2).reshape(B, T, d))
            h = rmsnorm(x, self.mlp_norm)
            if s != 1.0:
                h = h * s
            g, u = self.w13(h).chunk(2, dim=-1)                        # (B, T, ffn) each
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

        def forward(self, tokens, targets):                           # (B, T) each
            x = self.tok_embeddings(tokens)
            for l, blk in enumerate(self.layers, 1):
                x = blk(x, 1 / math.sqrt(l) if a.scheme == "lns" else 1.0)
            logits = self.output(rmsnorm(x, self.norm))               # (B, T, V)
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = Model()
    matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in n]
    others = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    times, fb, losses = [], [], []
    hwm = peak_rss_reset()
    for k in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if a.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(tokens, targets)
        else:
            loss = model(tokens, targets)
        loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t2 = time.perf_counter()
        losses.append(loss.item())
        if k >= a.warmup:
            times.append(t2 - t0)
            fb.append(t1 - t0)
    rss_kb = peak_rss_kb() if hwm else -1
    print("result median_ms=%.2f min_ms=%.2f fwdbwd_ms=%.2f loss0=%.6f loss=%.6f rss_kb=%d"
          % (1e3 * statistics.median(times), 1e3 * min(times), 1e3 * statistics.median(fb), losses[0], losses[-1],
             rss_kb))


def peak_rss_reset():
    """Resets the process's VmHWM to its current RSS (Linux); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kb():
    """VmHWM in KiB, -1 when unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def run_combo(a, argv, combo):
    t, o = combo.split(",")
    env = dict(os.environ, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=o)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"] + argv, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("result ")]
    if r.returncode != 0 or not lines:
        sys.stderr.write("torch_train_bench: threads %s failed (exit %d):\n%s"
                         % (combo, r.returncode, r.stderr[-2000:]))
        return None
    return dict(kv.split("=") for kv in lines[-1].split()[1:])


def main():
    a = parse_args(sys.argv[1:])
    if a.worker:
        worker(a)
        return 0
    try:
        import torch  # noqa: F401 (only to skip cleanly; the workers use it)
    except ImportError:
        print("torch_train_bench: python3-torch is not installed; skipping")
        return 77
    argv = ["--model", a.model]
    for name in ("d", "L", "heads", "ffn", "vocab", "seq", "batch", "steps", "warmup"):
        argv += ["--" + name, str(getattr(a, name))]
    if a.bf16:
        argv.append("--bf16")
    print("torch %s, %s d %d L %d heads %d ffn %d vocab %d, batch %d x %d, %d warm-up + %d steps, %s, "
          "OMP_WAIT_POLICY=%s"
          % (torch.__version__, a.scheme, a.d, a.L, a.heads, a.ffn, a.vocab, a.batch, a.seq, a.warmup, a.steps,
             "bf16 autocast" if a.bf16 else "fp32", os.environ.get("OMP_WAIT_POLICY", "PASSIVE")))
    best, best_combo = None, None
    for combo in a.combos:
        r = run_combo(a, argv, combo)
        if r is None:
            continue
        print("threads torch,openblas=%s: median %s ms, min %s ms (fwd+bwd %s ms), loss %s -> %s, peak RSS %s KiB"
              % (combo, r["median_ms"], r["min_ms"], r["fwdbwd_ms"], r["loss0"], r["loss"], r["rss_kb"]))
        if best is None or float(r["median_ms"]) < float(best["median_ms"]):
            best, best_combo = r, combo
    if best is None:
        print("torch_train_bench: every thread combination failed", file=sys.stderr)
        return 1
    t, o = best_combo.split(",")
    print("result median_ms=%s min_ms=%s torch_threads=%s openblas_threads=%s loss0=%s loss=%s rss_kb=%s"
          % (best["median_ms"], best["min_ms"], t, o, best["loss0"], best["loss"], best["rss_kb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
