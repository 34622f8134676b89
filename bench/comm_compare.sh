#!/usr/bin/env bash
# The measurement behind docs/benchmarks.md: every backend (Tandem's default
# path, shm, gloo, mpi) beside a raw MPI_Allreduce, side by side, size by size,
# in the same processes, under mpirun, at 2, 3 and 4 ranks on one host.
# Usage: bench/comm_compare.sh [BUILD_DIR] [OUT_JSONL]
set -euo pipefail
build=${1:-build}
out=${2:-$build/comm_compare.jsonl}
: > "$out"
for np in 2 3 4; do
  echo "== $np ranks"
  MASTER_PORT=$((29700 + np)) mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" \
    -x MASTER_PORT "$build/tools/tandem" bench comm --backend all --op all \
    --min-bytes 4096 --max-bytes 67108864 --rounds 5 --json "$out"
done
echo "JSON lines: $out"
