// hf_tokenizer_reference.mjs - the reference of tests/hf_tokenizer.test:
// Hugging Face's own tokenizers.js (npm @huggingface/tokenizers) loads
// DIR/tokenizer.json and DIR/tokenizer_config.json and prints, for each
// FILE (read as UTF-8), one line with the ids of its text; then one line
// per file whose ids do not decode back to its text.
//   node hf_tokenizer_reference.mjs PACKAGE_DIR DIR FILE...
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pkg, dir, ...files] = process.argv.slice(2);
const { Tokenizer } = await import(pathToFileURL(pkg + "/dist/tokenizers.mjs").href);
const json = JSON.parse(readFileSync(dir + "/tokenizer.json", "utf8"));
const config = JSON.parse(readFileSync(dir + "/tokenizer_config.json", "utf8"));
const tok = new Tokenizer(json, config);
const bad = [];
for (const f of files) {
    const text = readFileSync(f, "utf8");
    const ids = tok.encode(text).ids;
    console.log(ids.join(" "));
    if (tok.decode(ids) !== text)
        bad.push("decode differs: " + f);
}
for (const b of bad)
    console.log(b);
