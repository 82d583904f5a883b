#!/usr/bin/env bash
# The soak: the standard workload against a local 3-member cluster for a long time, to see
# what short runs hide (memory or data that grow, snapshots that stall, throughput that sags).
#
#   scripts/soak.sh [--time 30m] [--clients 256] [--interval 30s] [--out DIR]
#
# Starts the members with scripts/cluster.sh (release build) in DIR/cluster, runs purser-bench
# with a row every interval (ops/s, p50/p99/max, errors, the longest apply of any member, and
# each member's RSS, live heap, data directory and snapshot size), then writes DIR/soak.svg
# (throughput and p99 over time) and DIR/soak.txt (the rows). The bench audits the end state:
# no node over its cap, every acknowledged settle counted. Exit code 0 only with a clean audit
# and zero errors.
# PURSER_BIN=/path/to/purser runs the members on that binary (say, an older build to compare).
# Not part of the test command (it runs for as long as asked).
set -euo pipefail
cd "$(dirname "$0")/.."

time=30m
clients=256
interval=30s
out=./soak
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

. scripts/setup.sh
purser_setup
cargo build --release --locked -p purser-cli -p purser-bench
mkdir -p "$out"
cluster="$out/cluster"
rm -rf "$cluster"
trap 'scripts/cluster.sh stop "$cluster" >/dev/null 2>&1 || true' EXIT
PURSER_BIN="${PURSER_BIN:-$CARGO_TARGET_DIR/release/purser}" scripts/cluster.sh start "$cluster"

"$CARGO_TARGET_DIR/release/purser-bench" run \
  --endpoints http://127.0.0.1:7600,http://127.0.0.1:7601,http://127.0.0.1:7602 \
  --token "$(cat "$cluster/admin.token")" \
  --clients "$clients" --duration "$time" --warmup 5s \
  --interval "$interval" --cluster-dir "$cluster" --plot "$out/soak.svg" \
  --label "purser-3-soak" | tee "$out/soak.txt"
