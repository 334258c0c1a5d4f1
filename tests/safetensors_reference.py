#!/usr/bin/python3
"""safetensors_reference.py - an independent check of Strata's safetensors
files (runtime/store/safetensors.c), run by tests/safetensors_test.c.

  safetensors_reference.py check FILE   FILE was written by safetensors_test.c;
                                        its tensors and metadata must be the
                                        reference contents below
  safetensors_reference.py write FILE   writes a file the C reader must load

Reading uses Hugging Face's `safetensors` package when it is installed, else
the small reader below, written from the format's specification
(https://huggingface.co/docs/safetensors) with struct, json and numpy.
Writing uses safetensors.torch.save_file when available, else the writer
below, which lays tensors out unaligned and leaves the header unpadded (both
legal) to exercise the C reader's handling of other writers' files.  Tensor
values come from torch when it is installed, else numpy.
Exit 0 pass, 1 fail, 77 when numpy is missing.
"""
import json
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("SKIP: no numpy")
    sys.exit(77)
try:
    import safetensors
    import safetensors.numpy
except ImportError:
    safetensors = None
try:
    import torch
except ImportError:
    torch = None

# The contents safetensors_test.c writes (fill_reference there).
MODEL_TEXT = 'model tiny {\n  d = 64  # "quoted" \u00fcnic\u00f6de\n}\n'
CONFIG_TEXT = '{"d": 64, "lr": 0.001}'


def expected():
    return {
        "w": np.arange(15, dtype=np.float32).reshape(3, 5) * np.float32(0.25) - np.float32(1),
        "m": np.array([1.0 / (i + 1) for i in range(4)], dtype=np.float64),
        "step": np.array([123456789012], dtype=np.int64),
        "ids": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "rng": np.array([i * 37 % 256 for i in range(7)], dtype=np.uint8),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "scalar": np.array(3.5, dtype=np.float32),
    }


DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
          "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "I64": np.int64,
          "U64": np.uint64, "F64": np.float64}


def read_spec(path):
    """The format, read and checked without the safetensors package."""
    with open(path, "rb") as f:
        raw = f.read()
    assert len(raw) >= 8, "shorter than the header length"
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw), "header runs past the end"
    header = raw[8:8 + n].decode("utf-8")
    assert header.startswith("{"), "header does not start with '{'"
    # Strata pads the header with spaces to 8 bytes, so data is aligned.
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    assert header.rstrip(" ").endswith("}"), "the header is padded with something other than spaces"
    h = json.loads(header)
    meta = h.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    data = raw[8 + n:]
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in h.items())
    at = 0
    for b, e, name in spans:
        assert b == at, f"{name}: begins at {b}, previous ends at {at}"
        at = e
    assert at == len(data), "tensors do not cover the data"
    out = {}
    for name, info in h.items():
        b, e = info["data_offsets"]
        dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        assert e - b == count * dt.itemsize, f"{name}: {e - b} bytes for {count} elements"
        assert b % dt.itemsize == 0, f"{name}: data not aligned to its element size"
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape)
    return out, meta


def check(path):
    if safetensors is not None:
        tensors = safetensors.numpy.load_file(path)
        with safetensors.safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
        how = f"safetensors {getattr(safetensors, '__version__', '?')}"
    else:
        tensors, meta = read_spec(path)
        how = "the independent reader (numpy)"
    want = expected()
    ok = True
    if set(tensors) != set(want):
        print(f"FAIL: {path}: tensors {sorted(tensors)}, want {sorted(want)}")
        return 1
    for name, w in want.items():
        t = tensors[name]
        if t.dtype != w.dtype or t.shape != w.shape or not np.array_equal(t, w):
            print(f"FAIL: {path}: tensor {name}: {t.dtype} {t.shape} {t!r}, want {w.dtype} {w.shape} {w!r}")
            ok = False
    if meta != {"model": MODEL_TEXT, "config": CONFIG_TEXT}:
        print(f"FAIL: {path}: metadata {meta!r}")
        ok = False
    print(f"reference: read {path} with {how}: {'same' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def reference_tensors():
    """The tensors of the file we write, as (name, dtype name, shape, bytes)."""
    if torch is not None:
        ts = {
            "a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
            "b": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
            "c": torch.tensor([-1, 2 ** 40], dtype=torch.int64),
            "d": torch.tensor([1.0, -2.0], dtype=torch.bfloat16),
            "e": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float16),
            "f": torch.tensor([1, 2, 3], dtype=torch.uint8),
            "g": torch.tensor([True, False]),
        }
        names = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.bfloat16: "BF16",
                 torch.float16: "F16", torch.uint8: "U8", torch.bool: "BOOL"}
        raw = {}
        for k, t in ts.items():
            b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
            raw[k] = (names[t.dtype], list(t.shape), b)
        return ts, raw
    arrays = {
        "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / np.float32(4) - np.float32(0.5),
        "b": np.array([0.1, 0.2, 0.3], dtype=np.float64),
        "c": np.array([-1, 2 ** 40], dtype=np.int64),
        "e": np.array([1.0, -2.0, 0.5], dtype=np.float16),
        "f": np.array([1, 2, 3], dtype=np.uint8),
        "g": np.array([True, False]),
    }
    names = {np.float32: "F32", np.float64: "F64", np.int64: "I64", np.float16: "F16", np.uint8: "U8",
             np.bool_: "BOOL"}
    raw = {k: (names[a.dtype.type], list(a.shape), a.astype(a.dtype.newbyteorder("<")).tobytes())
           for k, a in arrays.items()}
    raw["d"] = ("BF16", [2], struct.pack("<2H", 0x3F80, 0xC000))  # numpy has no bfloat16
    return None, raw


def write(path):
    meta = {"note": "written by tests/safetensors_reference.py"}
    ts, raw = reference_tensors()
    if safetensors is not None and ts is not None:
        from safetensors.torch import save_file
        save_file(ts, path, metadata=meta)
        print(f"reference: wrote {path} with safetensors.torch")
        return 0
    # Unaligned on purpose: the 3 U8 and 2 BOOL bytes first; a readable,
    # unpadded header.
    order = ["f", "g", "a.weight", "b", "c", "d", "e"]
    header = {"__metadata__": meta}
    at = 0
    for k in order:
        dtype, shape, b = raw[k]
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(b)]}
        at += len(b)
    text = json.dumps(header, indent=1).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for k in order:
            f.write(raw[k][2])
    print(f"reference: wrote {path} with the independent writer ({'torch' if ts is not None else 'numpy'} values)")
    return 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "write"):
        print(__doc__)
        return 2
    try:
        return check(sys.argv[2]) if sys.argv[1] == "check" else write(sys.argv[2])
    except (AssertionError, KeyError, ValueError) as e:
        print(f"FAIL: {sys.argv[2]}: {e!r}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
