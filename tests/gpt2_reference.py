"""gpt2_reference.py - random texts split by GPT-2's own pre-tokenizer
regex, with Python's `regex` module (the one GPT-2's encoder.py uses), for
tokenizer_test --pretokens to compare Strata's C scanner with.

    python3 tests/gpt2_reference.py N SEED > cases.jsonl

Each line is {"text": ..., "pieces": [...]}.  The texts mix the characters
the regex treats specially (space, tab, newline, apostrophes before s t re
ve m ll d), ASCII, letters and numbers of many scripts, marks, symbols,
Unicode spaces and random code points.  Exit 77 without `regex`."""
import json
import random
import sys
import unicodedata

try:
    import regex
except ImportError:
    print("SKIP: python3 has no regex module (Debian: python3-regex)", file=sys.stderr)
    sys.exit(77)

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

PIECES = [
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S",
    "a", "b", "Z", "the", "I", "0", "7", "42", ".", ",", "!", "?", "-", "(", ")", "\"", "...", "$", "_",
    "é", "ñ", "Æ", "ß", "ŀ", "ǅ", "Ω", "λ", "я", "Ж", "ʼ", "ˆ", "中", "文", "あ", "カ", "한", "ע", "ب",
    "न", "्", "ी", "\u0301", "²", "½", "Ⅻ", "١", "３", "𝟘", "🤖", "😀", "\u200d", "\u00a0", "\u2009",
    "\u3000", "\u2028", "\u0085", "\u1680", "\u000b", "\u000c", "\u001c", "\u00ad", "\ufeff", "\u2060",
]


def random_char(rng):
    """A random code point that Python's Unicode tables already assign (or
    reserve for private use): a code point assigned in a later Unicode
    version is a letter to Strata's tables (generated from node's ICU, a
    newer Unicode) but unassigned to `regex`, a version skew, not a bug."""
    while True:
        cp = rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x800, 0x10000), rng.randrange(0x10000, 0x110000)])
        if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Cn":
            return chr(cp)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    out = sys.stdout
    for _ in range(n):
        parts = []
        for _ in range(rng.randrange(1, 40)):
            parts.append(random_char(rng) if rng.random() < 0.1 else rng.choice(PIECES))
        text = "".join(parts)
        out.write(json.dumps({"text": text, "pieces": PAT.findall(text)}) + "\n")


main()
