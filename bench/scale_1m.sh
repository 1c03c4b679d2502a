#!/usr/bin/env bash
# `rayrec train` (and, with WITH_EVAL=1, `rayrec eval`) on a planted log of 1,000,000 interactions
# (6,000 users, 3,700 items; bench/synthetic_log.py), timed. Each prints its JSON into bench/out/;
# the train JSON's "epochs" holds seconds and held-out HR@10 per epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=token
mkdir -p bench/out
LOG=${LOG:-/tmp/rayrec-log-1m}
N=${N:-1000000}
[ -f "$LOG/interactions.parquet" ] || python bench/synthetic_log.py --interactions "$N" --out "$LOG"
start=$(date +%s)
rayrec train --interactions "$LOG/interactions.parquet" --items "$LOG/items.parquet" --out "$LOG/models" --json \
  > bench/out/train_1m.json 2> bench/out/train_1m.log
echo "{\"train_seconds\": $(( $(date +%s) - start ))}"
if [ "${WITH_EVAL:-0}" = 1 ]; then
  start=$(date +%s)
  rayrec eval --interactions "$LOG/interactions.parquet" --items "$LOG/items.parquet" --json --no-progress \
    > bench/out/eval_1m.json 2> bench/out/eval_1m.log
  echo "{\"eval_seconds\": $(( $(date +%s) - start ))}"
fi
