#!/usr/bin/python3
"""layering.py - the architecture as a test (issue #14; docs/architecture.md).

Usage: layering.py SRCDIR BUILDDIR

Two graphs of the compiler's and the runtime's C files:
  calls     file A -> file B when A's object file uses a symbol that B's
            defines (nm over the build tree's objects);
  includes  file A -> header H for every #include "..." of A that names a
            header of the source tree.
Each file belongs to a layer (LAYERS below, from its folder).  Checked:
  1. no circle of files in the call graph (two files that call each other,
     directly or around a loop, are one module in disguise);
  2. no circle of layers, and every call and include goes to the same layer
     or to a lower one, in the order of LAYERS: the runtime library never
     reaches the compiler or the commands, a lowering emitter never calls a
     sibling emitter, and so on;
  3. inside compiler/lower, the emitters (rows, loops, calls, abi) call only
     the core (cg.c, arith.c).
Prints the counts it checked and every violation; exit 0 pass, 1 fail,
77 skip (no nm, or nothing built)."""
import os
import re
import shutil
import subprocess
import sys

# Layers, lowest first: a file may use its own layer and the ones before it.
LAYERS = [
    ("runtime/core", ["runtime/core", "runtime/model_abi.h"]),
    ("runtime/gpu", ["runtime/gpu"]),
    ("runtime/store", ["runtime/store"]),
    ("runtime/data", ["runtime/data"]),
    ("runtime/train", ["runtime/train", "runtime/model.h"]),
    ("front end", ["grammar", "compiler/front"]),
    ("compiler/ir", ["compiler/ir"]),
    ("compiler/resolve", ["compiler/resolve"]),
    ("compiler/lower", ["compiler/lower"]),
    ("runtime/cmd", ["runtime/cmd", "runtime/trainer.h"]),
    ("compiler/driver", ["compiler/driver"]),
]
# Inside compiler/lower: rank of each file (a file calls only lower ranks).
LOWER_RANKS = {"cg": 0, "arith": 0, "nvptx_core": 0.5, "rows": 1, "loops": 1, "calls": 1, "abi": 1, "nvptx_kern": 1,
               "nvptx_gemm": 1, "nvptx_attn": 1, "nvptx_opt": 1, "step": 2, "lower": 3, "nvptx": 3, "jit": 4}


def layer_of(path):
    best, rank = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if path == p or path.startswith(p + "/"):
                if best is None or len(p) > len(best):
                    best, rank = p, i
    return rank


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    srcdir, builddir = sys.argv[1], sys.argv[2]
    if not shutil.which("nm"):
        print("SKIP: no nm (binutils)")
        return 77
    # --- object files -> source files
    objs = {}
    for top in ("compiler", "runtime", "grammar"):
        for root, _, files in os.walk(os.path.join(builddir, top)):
            for f in files:
                if not f.endswith(".o"):
                    continue
                rel = os.path.relpath(os.path.join(root, f), builddir)
                d, base = os.path.split(rel)
                base = base[:-2]
                if "-" in base:
                    base = base.split("-", 1)[1]
                objs[os.path.join(d, base + ".c")] = os.path.join(builddir, rel)
    if len(objs) < 20:
        print("SKIP: the build tree has %d objects under compiler/, runtime/, grammar/ (run make first)" % len(objs))
        return 77
    defs, uses = {}, {}
    for src, obj in objs.items():
        out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True).stdout
        u = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            name, kind = parts[0], parts[1]
            if kind == "U":
                u.add(name)
            elif kind in "TDBRVWCG":  # global definitions
                defs.setdefault(name, set()).add(src)
        uses[src] = u
    calls = {s: set() for s in objs}
    for s, u in uses.items():
        for name in u:
            for t in defs.get(name, ()):
                if t != s:
                    calls[s].add(t)
    ncalls = sum(len(v) for v in calls.values())
    failures = []

    # 1. circles of files (Tarjan's strongly connected components)
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(calls[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(calls):
        if v not in index:
            strong(v)
    for comp in sccs:
        if len(comp) > 1:
            failures.append("circle of calls: " + " <-> ".join(sorted(comp)))

    # 2. layers: calls and includes
    inc_rx = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    headers = {}
    for top in ("compiler", "runtime"):
        for root, _, files in os.walk(os.path.join(srcdir, top)):
            for f in files:
                if f.endswith(".h"):
                    rel = os.path.relpath(os.path.join(root, f), srcdir)
                    headers[os.path.relpath(rel, top)] = rel  # "ir/ir.h" -> compiler/ir/ir.h
                    if os.path.dirname(rel) == top:
                        headers[f] = rel  # runtime/trainer.h as "trainer.h"
    nincs = 0
    sources = []
    for top in ("compiler", "runtime"):
        for root, _, files in os.walk(os.path.join(srcdir, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    sources.append(os.path.relpath(os.path.join(root, f), srcdir))
    for s in sorted(sources):
        ls = layer_of(s)
        if ls < 0:
            failures.append("%s: in no layer of tests/layering.py" % s)
            continue
        with open(os.path.join(srcdir, s), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for inc in inc_rx.findall(text):
            target = headers.get(inc)
            if not target:
                continue  # generated (parser.h, toolchain.h) or a system header
            nincs += 1
            lt = layer_of(target)
            if lt > ls:
                failures.append("%s (%s) includes %s (%s), a higher layer" % (s, LAYERS[ls][0], target, LAYERS[lt][0]))
    for s in sorted(calls):
        ls = layer_of(s)
        for t in sorted(calls[s]):
            lt = layer_of(t)
            if ls >= 0 and lt > ls:
                failures.append("%s (%s) calls %s (%s), a higher layer" % (s, LAYERS[ls][0], t, LAYERS[lt][0]))
            # 3. the lowering's own layers
            if s.startswith("compiler/lower/") and t.startswith("compiler/lower/"):
                a = LOWER_RANKS.get(os.path.basename(s)[:-2])
                b = LOWER_RANKS.get(os.path.basename(t)[:-2])
                if a is None or b is None:
                    failures.append("%s or %s: not in LOWER_RANKS of tests/layering.py" % (s, t))
                elif b >= a and not (a == 0 and b == 0 and os.path.basename(t) == "cg.c"):
                    failures.append("%s calls its sibling %s (the emitters use only the core)" % (s, t))
    print("layering: %d object files, %d call edges, %d includes, %d layers" %
          (len(objs), ncalls, nincs, len(LAYERS)))
    for f in failures:
        print("FAIL: " + f)
    if not failures:
        print("ok: no circle of files or layers; every call and include goes down the layers")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
