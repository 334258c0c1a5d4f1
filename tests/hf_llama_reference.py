#!/usr/bin/python3
"""hf_llama_reference.py - Hugging Face LlamaForCausalLM's forward pass, for
tests/export.test: loads an exported directory (config.json +
model.safetensors) and compares its logits with Strata's.

    hf_llama_reference.py DIR TOKENS LOGITS B T [--tol X] [--no-control]

TOKENS: (B, T) int32, LOGITS: (B, T, vocab) float32, raw little-endian, as
written by tests/export_helper.  The forward pass is written to match
transformers' models/llama/modeling_llama.py (eager attention, float32):
LlamaRMSNorm (x in float32 times rsqrt(mean(x^2) + eps), then weight *),
LlamaRotaryEmbedding (inv_freq = 1 / base^(arange(0, hd, 2) / hd),
cat(freqs, freqs)), apply_rotary_pos_emb with rotate_half, repeat_kv,
softmax in float32 with a min-value causal mask, LlamaMLP
down(silu(gate(x)) * up(x)), pre-norm decoder layers, final norm, lm_head.
The control (skip it with --no-control) recomputes the logits with
interleaved RoPE pairs and fails unless they differ: it assumes weights
under which attention depends on position, such as the test's random ones
(a briefly trained model's may not).
It also checks config.json's fields and that model.safetensors holds
exactly the tensors, with the shapes, that LlamaForCausalLM would load.
Debian 12 has no python3-safetensors or transformers: the file is parsed
with struct and json here.  Exit 0 pass, 1 fail, 77 no torch.
"""
import json
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:
    print("SKIP: no torch/numpy")
    sys.exit(77)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            fail("%s: tensor %s is %s, expected F32" % (path, name, t["dtype"]))
        b, e = t["data_offsets"]
        a = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out, meta


class Config:
    def __init__(self, d):
        for key, want in (("model_type", "llama"), ("architectures", ["LlamaForCausalLM"]),
                          ("hidden_act", "silu"), ("torch_dtype", "float32"),
                          ("attention_bias", False), ("mlp_bias", False)):
            if d.get(key, want) != want:
                fail("config.json: %s is %r, expected %r" % (key, d.get(key), want))
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                    "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings"):
            if key not in d:
                fail("config.json has no %s" % key)
        if d.get("rope_scaling") is not None:
            fail("config.json: rope_scaling is set")
        self.hidden_size = d["hidden_size"]
        self.intermediate_size = d["intermediate_size"]
        self.num_attention_heads = d["num_attention_heads"]
        self.num_key_value_heads = d.get("num_key_value_heads", self.num_attention_heads)
        self.head_dim = d.get("head_dim", self.hidden_size // self.num_attention_heads)
        self.num_hidden_layers = d["num_hidden_layers"]
        self.vocab_size = d["vocab_size"]
        self.rms_norm_eps = d["rms_norm_eps"]
        self.rope_theta = d["rope_theta"]
        self.max_position_embeddings = d["max_position_embeddings"]
        self.tie_word_embeddings = d.get("tie_word_embeddings", False)


def expected_shapes(c):
    h, i, hd = c.hidden_size, c.intermediate_size, c.head_dim
    qd, kvd = c.num_attention_heads * hd, c.num_key_value_heads * hd
    s = {"model.embed_tokens.weight": [c.vocab_size, h], "model.norm.weight": [h]}
    if not c.tie_word_embeddings:
        s["lm_head.weight"] = [c.vocab_size, h]
    for l in range(c.num_hidden_layers):
        p = "model.layers.%d." % l
        s[p + "input_layernorm.weight"] = [h]
        s[p + "post_attention_layernorm.weight"] = [h]
        s[p + "self_attn.q_proj.weight"] = [qd, h]
        s[p + "self_attn.k_proj.weight"] = [kvd, h]
        s[p + "self_attn.v_proj.weight"] = [kvd, h]
        s[p + "self_attn.o_proj.weight"] = [h, qd]
        s[p + "mlp.gate_proj.weight"] = [i, h]
        s[p + "mlp.up_proj.weight"] = [i, h]
        s[p + "mlp.down_proj.weight"] = [h, i]
    return s


def rms_norm(x, weight, eps):  # LlamaRMSNorm.forward
    input_dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(input_dtype)


def rotary(c, position_ids):  # LlamaRotaryEmbedding (default rope type)
    dim = c.head_dim
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x):
    """The GPT-J / Meta-checkpoint convention (pairs 2i, 2i+1): used only as
    a control, to show the comparison tells the conventions apart."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(q, k, cos, sin, rot, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if rot is rotate_interleaved:  # cos/sin repeated per pair, not per half
        half = cos.shape[-1] // 2
        cos = cos[..., :half].repeat_interleave(2, dim=-1)
        sin = sin[..., :half].repeat_interleave(2, dim=-1)
    return (q * cos) + (rot(q) * sin), (k * cos) + (rot(k) * sin)


def repeat_kv(x, n_rep):
    b, kvh, t, hd = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kvh, n_rep, t, hd).reshape(b, kvh * n_rep, t, hd)


def attention(c, w, p, h, cos, sin, mask, rot):  # LlamaAttention + eager_attention_forward
    input_shape = h.shape[:-1]
    hidden_shape = (*input_shape, -1, c.head_dim)
    q = F.linear(h, w[p + "q_proj.weight"]).view(hidden_shape).transpose(1, 2)
    k = F.linear(h, w[p + "k_proj.weight"]).view(hidden_shape).transpose(1, 2)
    v = F.linear(h, w[p + "v_proj.weight"]).view(hidden_shape).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin, rot)
    groups = c.num_attention_heads // c.num_key_value_heads
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = torch.matmul(q, k.transpose(2, 3)) * c.head_dim ** -0.5
    scores = scores + mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(probs, v).transpose(1, 2).contiguous()
    out = out.reshape(*input_shape, -1).contiguous()
    return F.linear(out, w[p + "o_proj.weight"])


def forward(c, w, ids, rot=rotate_half):
    B, T = ids.shape
    h = F.embedding(ids, w["model.embed_tokens.weight"])
    position_ids = torch.arange(T)[None, :]
    cos, sin = rotary(c, position_ids)
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
    for l in range(c.num_hidden_layers):
        p = "model.layers.%d." % l
        r = h
        h = rms_norm(h, w[p + "input_layernorm.weight"], c.rms_norm_eps)
        h = r + attention(c, w, p + "self_attn.", h, cos, sin, mask, rot)
        r = h
        h = rms_norm(h, w[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        g = F.linear(h, w[p + "mlp.gate_proj.weight"])
        u = F.linear(h, w[p + "mlp.up_proj.weight"])
        h = r + F.linear(F.silu(g) * u, w[p + "mlp.down_proj.weight"])
    h = rms_norm(h, w["model.norm.weight"], c.rms_norm_eps)
    head = w["model.embed_tokens.weight"] if c.tie_word_embeddings else w["lm_head.weight"]
    return F.linear(h, head)


def main():
    args = sys.argv[1:]
    tol = 1e-4
    check_control = "--no-control" not in args
    if not check_control:
        args.remove("--no-control")
    if "--tol" in args:
        i = args.index("--tol")
        tol = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 5:
        print(__doc__)
        sys.exit(2)
    d, tok_path, logits_path, B, T = args[0], args[1], args[2], int(args[3]), int(args[4])
    torch.set_num_threads(1)
    with open(d + "/config.json") as f:
        c = Config(json.load(f))
    w, meta = read_safetensors(d + "/model.safetensors")
    if meta.get("format") != "pt":
        fail("model.safetensors: metadata format is %r, transformers wants 'pt'" % meta.get("format"))
    want = expected_shapes(c)
    if set(w) != set(want):
        fail("model.safetensors: missing %s, unexpected %s" % (sorted(set(want) - set(w)),
                                                               sorted(set(w) - set(want))))
    for name, shape in want.items():
        if list(w[name].shape) != shape:
            fail("model.safetensors: %s has shape %s, LlamaForCausalLM expects %s"
                 % (name, list(w[name].shape), shape))
    if T > c.max_position_embeddings:
        fail("T %d > max_position_embeddings %d" % (T, c.max_position_embeddings))
    ids = torch.from_numpy(np.fromfile(tok_path, dtype="<i4").astype(np.int64)).view(B, T)
    got = torch.from_numpy(np.fromfile(logits_path, dtype="<f4").copy()).view(B, T, c.vocab_size)
    with torch.no_grad():
        ref = forward(c, w, ids)
        control = forward(c, w, ids, rot=rotate_interleaved)
    scale = ref.abs().max().item()
    err = (ref - got).abs().max().item()
    cerr = (control - got).abs().max().item()
    print("%s: %d layers, max |logit| %.4f, max |HF - strata| %.3e (relative %.3e, tolerance %.0e); "
          "interleaved-RoPE control %.3e" % (d, c.num_hidden_layers, scale, err, err / scale, tol, cerr / scale))
    if not err <= tol * scale:
        fail("%s: logits differ by %.3e relative (tolerance %.0e)" % (d, err / scale, tol))
    if check_control and not cerr > 100 * tol * scale:
        fail("%s: the interleaved-RoPE control agrees too (%.3e): the check cannot see RoPE's layout"
             % (d, cerr / scale))


if __name__ == "__main__":
    main()
