#!/usr/bin/python3
"""gpu_compare.py - two gradient files of `TRAINER grads` (safetensors: one
F32 tensor per parameter, the loss in the metadata strata.loss) compared,
for bench/gpu-check (issue #18): the device's against the CPU's fp32
reference.  The safetensors format is read here from its definition (an
8-byte little-endian header length, a JSON header, the raw data), not
through Strata.

Usage: gpu_compare.py REF.safetensors GOT.safetensors
Prints one line: "loss_rel=X max_rel=Y worst=NAME tensors=N", where a
tensor's error is max|got - ref| / max|ref| (relative to the tensor's own
scale, so a tensor of small values is not judged by its near-zero
elements), max_rel the largest over the tensors and loss_rel
|loss_got - loss_ref| / |loss_ref|.  Exit 0, 1 when the files do not match
(a tensor missing, another shape, a NaN), 2 usage.
"""
import json
import math
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = head.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in head.items():
        if t["dtype"] != "F32":
            raise ValueError("%s: %s is %s, not F32" % (path, name, t["dtype"]))
        a, b = t["data_offsets"]
        tensors[name] = (tuple(t["shape"]), blob[base + a:base + b])
    return meta, tensors


def values(raw):
    try:
        import numpy
        return numpy.frombuffer(raw, dtype="<f4").astype("float64")
    except ImportError:
        return [x[0] for x in struct.iter_unpack("<f", raw)]


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    try:
        mref, ref = read(argv[1])
        mgot, got = read(argv[2])
    except (OSError, ValueError, KeyError, struct.error) as e:
        print("gpu_compare: cannot read the files: %s" % e)
        return 1
    worst, worst_name = 0.0, ""
    for name, (shape, raw) in ref.items():
        if name not in got or got[name][0] != shape:
            print("gpu_compare: %s: %s" % (name, "missing" if name not in got else "shape %s, expected %s"
                                            % (got[name][0], shape)))
            return 1
        r, g = values(raw), values(got[name][1])
        scale = max(abs(x) for x in r) if len(r) else 0.0
        diff = max(abs(float(x) - float(y)) for x, y in zip(r, g)) if len(r) else 0.0
        if not math.isfinite(diff):
            print("gpu_compare: %s: NaN or infinite values" % name)
            return 1
        err = diff / scale if scale > 0 else diff
        if err > worst or not worst_name:
            worst, worst_name = err, name
    lr, lg = float(mref.get("strata.loss", "nan")), float(mgot.get("strata.loss", "nan"))
    loss_rel = abs(lg - lr) / abs(lr) if lr else abs(lg - lr)
    if not math.isfinite(loss_rel):
        print("gpu_compare: the loss is %s on the device, %s in the reference" % (lg, lr))
        return 1
    print("loss_rel=%.3g max_rel=%.3g worst=%s tensors=%d" % (loss_rel, worst, worst_name, len(ref)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
