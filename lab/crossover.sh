#!/bin/sh
# The sync-against-async crossover of docs/lab.md ("The crossover"): virtual
# workers of ddp, easgd and gossip on the MLP, to a target loss, on a fat
# tree at 1, 10 and 100 Gbit/s, without stragglers and with lognormal ones.
# usage: lab/crossover.sh BUILD_DIR OUT_DIR [WORKERS]
set -eu
build=$1
out=$2
workers=${3:-2,8,32,64,128,256}
tandem=$build/tools/tandem
mkdir -p "$out"
[ -f "$out/mlp.json" ] || "$tandem" profile --model mlp --batch-size 32 --steps 30 --cpu 0 \
  --out "$out/mlp.json" > /dev/null
for gbps in 1 10 100; do
  for sigma in 0 0.5; do
    name=fat-tree-${gbps}g-sigma$sigma
    cat > "$out/$name.yaml" <<YAML
name: fat tree, $gbps Gbit/s, 8 per node, lognormal stragglers sigma $sigma
nodes: {devices_per_node: 8, compute_speed: 1.0}
intra_node: {bandwidth_gbps: 200, latency_us: 5}
network: {bandwidth_gbps: $gbps, latency_us: 25}
topology: {kind: fat_tree, oversubscription: 2, leaf_nodes: 16}
stragglers: {distribution: $( [ "$sigma" = 0 ] && echo none || echo lognormal ), sigma: $sigma}
YAML
    "$tandem" lab converge --model mlp --data-noise 0.6 --lr 0.01 --batch-size 32 \
      --strategy ddp,easgd,gossip --workers "$workers" --target-loss 0.1 --max-steps 600 \
      --eval-every 5 --profile "$out/mlp.json" --cluster "$out/$name.yaml" \
      --json "$out/$name.jsonl" --plot "$out/$name.png"
  done
done
