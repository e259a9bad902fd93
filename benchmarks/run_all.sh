#!/usr/bin/env bash
# Runs every benchmark in turn (`make bench`); each prints a table and writes JSON under bench_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench_out
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
for b in bench_crawl bench_curation bench_train bench_sample; do
  if [ -f "benchmarks/$b.py" ]; then
    echo "=== $b"
    python "benchmarks/$b.py" "$@"
  fi
done
