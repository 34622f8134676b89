#!/usr/bin/env bash
# Samples/s of `tandem train` with each strategy on the same job, strategies
# interleaved within every round so they share the machine's state; prints
# one JSON line per run, then the median per strategy and its ratio to DDP.
# Usage: bench/strategies_throughput.sh BUILD_DIR [ROUNDS] [MODEL] [RANKS]
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [ROUNDS] [MODEL] [RANKS]}
rounds=${2:-5}
model=${3:-gpt-mini}
ranks=${4:-2}
strategies=(ddp zero1 zero2 zero3)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
declare -A all
for ((r = 0; r < rounds; r++)); do
  # Rotate the order each round so no strategy always runs first.
  for ((k = 0; k < ${#strategies[@]}; k++)); do
    s=${strategies[$(((k + r) % ${#strategies[@]}))]}
    out=$("$build/tools/tandem-run" --nproc-per-node "$ranks" -- "$build/tools/tandem" train \
      --model "$model" --data synthetic-tokens --dataset-size 4096 --steps 30 --batch-size 8 \
      --optimizer adamw --lr 1e-3 --strategy "$s" --log-every 1000 2>&1)
    sps=$(grep -o '([0-9.]* samples/s)' <<<"$out" | tr -dc '0-9.')
    [[ -n "$sps" ]] || { echo "$out" >&2; exit 1; }
    echo "{\"bench\":\"strategies\",\"model\":\"$model\",\"ranks\":$ranks,\"strategy\":\"$s\",\"round\":$r,\"samples_per_s\":$sps}"
    all[$s]+="$sps "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ddp=$(median "${all[ddp]}")
for s in "${strategies[@]}"; do
  m=$(median "${all[$s]}")
  echo "$s median samples/s $m, ratio to ddp $(awk -v a="$m" -v b="$ddp" 'BEGIN {printf "%.3f", a / b}')"
done
