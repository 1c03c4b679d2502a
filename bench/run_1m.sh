#!/usr/bin/env bash
# The 1M x 384 figures in README: IVF4096,Flat (nprobe 16) on one shard and on two, and
# HNSW32 (efSearch 256) on one shard. ~7-12 minutes a run on 2 cores, mostly index builds.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
run() {  # name, then retrieval.py arguments
  local name=$1; shift
  python bench/retrieval.py --items 1000000 --dim 384 --json "$@" > "bench/out/$name.json" 2> "bench/out/$name.log"
  cat "bench/out/$name.json"
}
run ivf4096_1m_1shard --shards 1 --index IVF4096,Flat --nprobe 16
run ivf4096_1m_2shard --shards 2 --index IVF4096,Flat --nprobe 16
if [ "${WITH_HNSW:-0}" = 1 ]; then
  run hnsw32_1m_1shard --shards 1 --index HNSW32 --ef-search 256
fi
