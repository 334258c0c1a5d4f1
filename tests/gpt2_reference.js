// gpt2_reference.js - GPT-2 ids of text files by the npm package
// gpt-3-encoder's own code, the reference tests/tokenizer.test compares
// Strata's C tokenizer with.
//   node tests/gpt2_reference.js PKGDIR FILE... > REF.ids
// PKGDIR holds the package's Encoder.js, encoder.json and vocab.bpe.  One
// line per FILE: the number of ids, then the ids.  The package's encode()
// appends with Array.concat, quadratic in the ids of one call, so this runs
// its regex and its bpe() itself (the same steps with push), and first
// checks that it agrees with encode() on each file's first 4000 characters.
// The package knows no special tokens: the text is cut at "<|endoftext|>",
// which becomes 50256 (what tiktoken does with allowed_special).
'use strict';
const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
const files = process.argv.slice(3);
const file = path.join(dir, 'Encoder.js');
// Encoder.js keeps bpe(), pat and the tables private: export them too.
const src = fs.readFileSync(file, 'utf8') +
    '\n;module.exports.bpe = bpe; module.exports.pat = pat;' +
    ' module.exports.byte_encoder = byte_encoder; module.exports.encoder = encoder;';
const mod = { exports: {} };
new Function('require', 'module', 'exports', '__dirname', '__filename', src)(require, mod, mod.exports, dir, file);
const E = mod.exports;
const utf8 = new TextEncoder();

function encodeOrdinary(text, out) {
    for (const m of text.matchAll(E.pat)) {
        const token = Array.from(utf8.encode(m[0])).map((b) => E.byte_encoder[b]).join('');
        for (const piece of E.bpe(token).split(' ')) {
            const id = E.encoder[piece];
            if (id === undefined)
                throw new Error('no id for ' + JSON.stringify(piece));
            out.push(id);
        }
    }
    return out;
}

function encode(text) {
    const out = [];
    text.split('<|endoftext|>').forEach((part, i) => {
        if (i > 0)
            out.push(50256);
        encodeOrdinary(part, out);
    });
    return out;
}

let status = 0;
const lines = [];
for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    let head = text.slice(0, 4000);
    if (/[\ud800-\udbff]$/.test(head))
        head = head.slice(0, -1); // do not cut a surrogate pair
    if (!head.includes('<|endoftext|>')) {
        const a = E.encode(head), b = encodeOrdinary(head, []);
        if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
            process.stderr.write(f + ': the package\'s encode() disagrees with this script\n');
            status = 1;
        }
    }
    const ids = encode(text);
    lines.push(ids.length + ' ' + ids.join(' '));
}
process.stdout.write(lines.join('\n') + '\n');
process.exit(status);
