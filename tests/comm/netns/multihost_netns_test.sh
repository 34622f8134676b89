#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces joined by a veth pair, each
# running tandem-run with 2 workers (--nnodes 2). init() must see two hosts
# and compose shared memory within each with Gloo across them, and every
# collective must give the right answer across the link. The link is capped
# with tc tbf (1 Gbit/s) so it behaves like a network, not like loopback.
# Needs root, iproute2 and tc. CI has them, so it must run there: a machine
# that cannot create the namespaces fails the test, with the reason, unless
# TANDEM_SKIP_NETNS=1 opts out (then it exits 77: ctest reports it skipped).
set -u
run=$1      # tandem-run
worker=$2   # comm_netns_worker
cannot_run() {
  if [ "${TANDEM_SKIP_NETNS:-0}" = 1 ]; then
    echo "skipped (TANDEM_SKIP_NETNS=1): $1"; exit 77
  fi
  echo "FAILED: $1; this test needs root, iproute2 and tc to build two hosts in network"
  echo "namespaces (CI has them). Run it as root, or set TANDEM_SKIP_NETNS=1 to skip it here."
  exit 1
}
if [ "$(id -u)" -ne 0 ]; then cannot_run "not root (uid $(id -u))"; fi
if ! command -v ip >/dev/null; then cannot_run "the ip command (iproute2) is missing"; fi
if ! command -v tc >/dev/null; then cannot_run "the tc command (iproute2) is missing"; fi
id=$$
a=tdm-a-$id; b=tdm-b-$id
cleanup() {
  for p in ${pids:-}; do kill -9 "$p" 2>/dev/null; done
  ip netns pids "$a" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns pids "$b" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null
}
trap cleanup EXIT
if ! err=$(ip netns add "$a" 2>&1) || ! err=$(ip netns add "$b" 2>&1); then
  cannot_run "cannot create network namespaces here (ip netns add: $err)"
fi
link() {
  ip link add "va$id" netns "$a" type veth peer name "vb$id" netns "$b" &&
  ip -n "$a" addr add 10.213.77.1/24 dev "va$id" &&
  ip -n "$b" addr add 10.213.77.2/24 dev "vb$id" &&
  ip -n "$a" link set lo up && ip -n "$b" link set lo up &&
  ip -n "$a" link set "va$id" up &&
  ip -n "$b" link set "vb$id" up &&
  ip netns exec "$a" tc qdisc add dev "va$id" root tbf rate 1gbit burst 256kb latency 50ms &&
  ip netns exec "$b" tc qdisc add dev "vb$id" root tbf rate 1gbit burst 256kb latency 50ms
}
if ! err=$(link 2>&1); then
  cannot_run "cannot link the namespaces with a veth pair capped by tc tbf ($err)"
fi
common=(--nnodes 2 --nproc-per-node 2 --master-addr 10.213.77.1 --master-port 29577)
ip netns exec "$a" env TANDEM_HOST_ID=host-a GLOO_SOCKET_IFNAME="va$id" \
  TANDEM_EXPECT_BACKEND="hier(shm+gloo)" \
  timeout 120 "$run" "${common[@]}" --node-rank 0 -- "$worker" > "/tmp/$a.log" 2>&1 &
pids="$!"
ip netns exec "$b" env TANDEM_HOST_ID=host-b GLOO_SOCKET_IFNAME="vb$id" \
  TANDEM_EXPECT_BACKEND="hier(shm+gloo)" \
  timeout 120 "$run" "${common[@]}" --node-rank 1 -- "$worker" > "/tmp/$b.log" 2>&1 &
pids="$pids $!"
rc=0
for p in $pids; do wait "$p" || rc=1; done
echo "== host a"; tail -20 "/tmp/$a.log"
echo "== host b"; tail -20 "/tmp/$b.log"
rm -f "/tmp/$a.log" "/tmp/$b.log"
if [ $rc -ne 0 ]; then echo "FAILED: a node's tandem-run exited non-zero"; exit 1; fi
echo "two hosts: passed"
