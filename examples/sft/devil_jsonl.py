#!/usr/bin/python3
"""devil_jsonl.py - The Devil's Dictionary (Debian dict-devil) as fine-tuning
records and a multiple-choice task.

    devil_jsonl.py OUTDIR [DICT.dz INDEX]

Reads the dictd files (/usr/share/dictd/devil.{dict.dz,index}), one entry per
headword: "WORD, n.  Definition..." -> {"prompt": "Define WORD.", "response":
"n.  Definition..."} with the lines joined (verse keeps its line breaks).
Shuffles with a fixed seed and writes OUTDIR/train.jsonl (90%),
OUTDIR/val.jsonl (10%, held out) and OUTDIR/mc.jsonl: for each held-out
word, context = sft's prompt template, choices = its definition and three
other held-out definitions (first 200 characters each), label = the right
one's place.  Prints the counts."""
import base64, gzip, json, os, random, re, sys

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def main():
    if len(sys.argv) not in (2, 4):
        sys.exit(__doc__)
    out = sys.argv[1]
    dz = sys.argv[2] if len(sys.argv) == 4 else "/usr/share/dictd/devil.dict.dz"
    idx = sys.argv[3] if len(sys.argv) == 4 else "/usr/share/dictd/devil.index"
    for f in (dz, idx):
        if not os.path.exists(f):
            sys.exit(f"devil_jsonl.py: {f} is missing (apt-get install dict-devil)")
    data = gzip.open(dz).read()
    records = []
    for line in open(idx, encoding="utf-8"):
        word, off, length = line.rstrip("\n").split("\t")
        if word.startswith("00database"):
            continue
        text = data[b64(off):b64(off) + b64(length)].decode("utf-8", "replace").strip("\n")
        m = re.match(r"([^,\n]+),\s*(.*)", text, re.S)
        if not m:
            continue
        head, body = m.group(1).strip(), m.group(2)
        paras = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
        # prose paragraphs joined into lines; indented verse keeps its lines
        parts = [p if p.startswith("    ") else " ".join(p.split()) for p in paras]
        resp = "\n".join(x.rstrip() for x in "\n\n".join(parts).split("\n"))
        records.append({"prompt": f"Define {head.title()}.", "response": resp})
    random.Random(5).shuffle(records)
    nval = len(records) // 10
    val, train = records[:nval], records[nval:]
    os.makedirs(out, exist_ok=True)
    for name, rs in (("train", train), ("val", val)):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for r in rs:
                f.write(json.dumps(r) + "\n")
    rng = random.Random(7)
    with open(os.path.join(out, "mc.jsonl"), "w") as f:
        for i, r in enumerate(val):
            others = rng.sample([j for j in range(len(val)) if j != i], 3)
            choices = [val[j]["response"][:200] for j in others]
            label = rng.randrange(4)
            choices.insert(label, r["response"][:200])
            ctx = "### Prompt:\n" + r["prompt"] + "\n### Response:\n"
            f.write(json.dumps({"context": ctx, "choices": choices, "label": label}) + "\n")
    print(f"devil: {len(records)} definitions: {len(train)} train, {len(val)} held out, {len(val)} mc items")


main()
