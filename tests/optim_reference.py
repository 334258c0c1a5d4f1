#!/usr/bin/python3
# optim_reference.py OUT - the independent reference for runtime/train/optim.c:
# runs torch.optim.AdamW and torch.optim.Adam (fp32, CPU) for 10 steps on
# seeded random parameters and gradients, with weight decay on some
# segments only (one torch parameter and param group per segment), a rate
# that changes every step and, in some cases, torch.nn.utils.clip_grad_norm_
# before each step; writes the inputs and torch's results to OUT as text
# for `optim_test --torch OUT` (tests/optim_torch.test) to replay and
# compare.  Needs Debian's python3-torch; exits 77 without it.
#
# OUT: "strata-optim-reference 1", then per case:
#   case NAME KIND(adamw|adam) N NSEG STEPS BETA1 BETA2 EPS WD MAX_NORM(0: none)
#   NSEG lines "offset numel decay"  (a segment with decay -1 is left out of
#                                     the C mask: it must get no decay)
#   init N floats;  then per step: "step K LR NORM" and N gradient floats
#   (NORM: the norm torch's clip returned, 0 if no clipping);
#   param N floats; m N floats; v N floats  (after the last step)
#   end
# Floats are fp32 values written with 9 significant digits (exact round trip).
import sys

try:
    import torch
except ImportError:
    print("SKIP: no torch (Debian: apt-get install python3-torch)")
    sys.exit(77)

STEPS = 10


def floats(out, t):
    out.write(" ".join("%.9g" % x for x in t.reshape(-1).tolist()) + "\n")


def run_case(out, name, kind, sizes, decays, wd, betas, eps, max_norm, seed):
    """sizes[i] elements in segment i; decays[i] 1 decay, 0 no decay, -1 no
    decay and absent from the C mask."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float32)) for s in sizes]
    groups = [{"params": [p], "weight_decay": wd if d == 1 else 0.0} for p, d in zip(params, decays)]
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    opt = cls(groups, lr=1e-3, betas=betas, eps=eps)
    n = sum(sizes)
    out.write("case %s %s %d %d %d %.17g %.17g %.17g %.17g %.17g\n"
              % (name, kind, n, len(sizes), STEPS, betas[0], betas[1], eps, wd, max_norm))
    off = 0
    for s, d in zip(sizes, decays):
        out.write("%d %d %d\n" % (off, s, d))
        off += s
    floats(out, torch.cat([p.detach() for p in params]))
    for k in range(STEPS):
        lr = 1e-2 * (0.5 + 0.5 * ((k * 7) % 5) / 4)  # changes every step
        # gradients of varying scale, one segment all zero on some steps
        scale = 10.0 ** (((k * 3) % 5) - 2)
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
            if i == 1 and k % 4 == 2:
                g.zero_()
            p.grad = g
        grads = torch.cat([p.grad.detach().clone() for p in params])  # before clipping
        norm = 0.0
        if max_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        for gr in opt.param_groups:
            gr["lr"] = lr
        opt.step()
        out.write("step %d %.17g %.17g\n" % (k, lr, norm))
        floats(out, grads)
    floats(out, torch.cat([p.detach() for p in params]))
    floats(out, torch.cat([opt.state[p]["exp_avg"] for p in params]))
    floats(out, torch.cat([opt.state[p]["exp_avg_sq"] for p in params]))
    out.write("end\n")


def main():
    if len(sys.argv) != 2:
        print("usage: optim_reference.py OUT", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with open(sys.argv[1], "w") as out:
        out.write("strata-optim-reference 1\n")
        # A transformer-like mask: matrices decay; norms, biases, embeddings don't.
        sizes = [256, 16, 384, 16, 7, 300, 1]
        run_case(out, "adamw", "adamw", sizes, [1, 0, 1, 0, 0, 1, 0], 0.1, (0.9, 0.95), 1e-8, 0.0, 1)
        run_case(out, "adam_l2", "adam", sizes, [1, 0, 1, 0, 0, 1, 0], 0.01, (0.9, 0.999), 1e-8, 0.0, 2)
        # Segments absent from the mask (-1) and clipping on every step.
        run_case(out, "adamw_gaps_clip", "adamw", sizes, [-1, 0, 1, -1, 1, 1, -1], 0.05, (0.8, 0.99), 1e-6, 1.0, 3)
        run_case(out, "adam_clip", "adam", sizes, [0, 1, 1, 0, -1, 1, 0], 0.02, (0.9, 0.999), 1e-8, 5.0, 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
