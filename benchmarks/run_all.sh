#!/usr/bin/env bash
# Run every benchmark once, in order, and print its figures (`make bench`).
# The label-efficiency study trains 5 models: run it on its own (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
for b in synth prep images qa render motion train checksum; do
  printf '\n==== benchmarks/%s.py\n' "$b"
  python "benchmarks/$b.py"
done
