#!/usr/bin/env bash
# The HTTP and encoder figures in README (2 cores: ~25 minutes in all, mostly the 1M index build).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
python bench/encoder.py --json > bench/out/encoder.json 2> bench/out/encoder.log; cat bench/out/encoder.json
for n in 100000 1000000; do
  python bench/http_latency.py --items "$n" --json > "bench/out/http_${n}.json" 2> "bench/out/http_${n}.log"
  cat "bench/out/http_${n}.json"
done
