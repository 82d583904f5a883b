#!/usr/bin/env bash
# The chaos harness (jepsen/): real `purser serve` processes in network namespaces under
# partitions, packet loss, kill -9, pauses, leader transfers, membership changes, snapshots
# with log purges, file corruption, wall-clock jumps, a skewed Raft clock, and delayed or
# duplicated Raft messages; a recorded history and its checkers.
#
#   scripts/jepsen.sh [--time 30m] [--nodes 3|5] [--seed N]
#                     [--nemesis all|partition|kill|pause|loss|membership|snapshot|corrupt|clock|delay|none]
#   scripts/jepsen.sh --planted double-apply [--time 25s] [--seed N]
#
# Needs root (namespaces, a bridge, iptables inside the namespaces); installs iptables,
# iproute2 and libfaketime with apt-get when missing and builds the release binaries (the
# members with the test-only `fault-hooks` feature, as `purser-faults`). Each run writes
# jepsen/runs/seed-<seed>-<time>/ (history.jsonl, nemesis.jsonl, node logs, verdicts.json,
# summary.txt, plot.svg) and prints one summary line. Exit code: 0 when every checker passed (with
# --planted: when the harness caught the planted bug), 1 when a checker failed, 2 when the
# harness itself failed.
set -euo pipefail
cd "$(dirname "$0")/.."

time=60s
nemesis=all
seed=""
nodes=3
planted=""
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time=$2; shift 2 ;;
    --nemesis) nemesis=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --planted) planted=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/jepsen.sh needs root (network namespaces and iptables)" >&2
  exit 2
fi
# Namespaces and links (iproute2), rules inside them (iptables), and libfaketime for the
# wall-clock nemesis.
. scripts/setup.sh
purser_setup iproute2 iptables libfaketime
release="$CARGO_TARGET_DIR/release"
args=(run --time "$time" --nemesis "$nemesis" --nodes "$nodes")
[ -n "$seed" ] && args+=(--seed "$seed")

if [ -n "$planted" ]; then
  # The planted binary is kept apart, and the normal one is rebuilt in its place.
  cargo build --release --locked -p purser-cli --features planted-bugs,fault-hooks
  # A hard link, not a copy: the binary is hundreds of megabytes with its debug info.
  ln -f "$release/purser" "$release/purser-planted"
  cargo build --release --locked -p purser-cli -p purser-jepsen
  set +e
  PURSER_BIN="$release/purser-planted" PURSER_PLANTED_BUG="$planted" \
    "$release/purser-jepsen" "${args[@]}"
  code=$?
  set -e
  if [ "$code" -eq 1 ]; then
    echo "planted bug $planted: caught"
    exit 0
  fi
  echo "planted bug $planted: NOT caught (exit $code)" >&2
  exit 1
fi

# The members carry the fault hooks (a test-only build, kept apart); the normal binary is
# rebuilt in its place.
cargo build --release --locked -p purser-cli --features fault-hooks
ln -f "$release/purser" "$release/purser-faults"
cargo build --release --locked -p purser-cli -p purser-jepsen
PURSER_BIN="$release/purser-faults" exec "$release/purser-jepsen" "${args[@]}"
