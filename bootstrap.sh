#!/usr/bin/env bash
# bootstrap.sh - from a fresh Debian 12 checkout to a working Strata: installs
# the packages of tools/debian-packages.txt (apt-get, sudo unless root),
# builds in the source tree, then runs MAIN_JOB.
set -euo pipefail

# The demonstration run after the build; later work points this at training.
MAIN_JOB='./strata check models/lns.strata'

cd "$(dirname "$0")"
tools/install-deps
autoreconf -fi
./configure
make -j"${JOBS:-2}"
echo "+ $MAIN_JOB"
eval "$MAIN_JOB"
