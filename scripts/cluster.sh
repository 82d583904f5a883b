#!/usr/bin/env bash
# A local 3-member Purser cluster on loopback, for trying replication, failover and the CLI.
#
#   scripts/cluster.sh start  [DIR]   build `purser` (release), start 3 members, init, wait for a leader
#   scripts/cluster.sh stop   [DIR]   SIGTERM each member, SIGKILL after a timeout
#   scripts/cluster.sh status [DIR]   `purser cluster status` of the three members
#
# Members 1..3 listen for clients on 127.0.0.1:7600-7602 and for peers on 127.0.0.1:7700-7702.
# DIR (default ./.purser-cluster) holds each member's data (n1/ ...), log (n1.log) and pid file,
# and admin.token: the cluster's first token (scope /, admin), written by `cluster init`.
# PURSER_BIN=/path/to/purser skips the build and runs that binary instead.
# Use it with: PURSER_TOKEN_FILE=DIR/admin.token \
#   purser --endpoint http://127.0.0.1:7600,http://127.0.0.1:7601,http://127.0.0.1:7602 ...
set -euo pipefail

usage() {
  echo "usage: $0 start|stop|status [DIR]" >&2
  exit 2
}

command=${1:-}
dir=${2:-./.purser-cluster}
[ -n "$command" ] || usage
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/setup.sh"
bin="${PURSER_BIN:-$CARGO_TARGET_DIR/release/purser}"
members=(1 2 3)
endpoints=http://127.0.0.1:7600,http://127.0.0.1:7601,http://127.0.0.1:7602
stop_timeout_s=${PURSER_STOP_TIMEOUT:-15}
wait_timeout_s=${PURSER_WAIT_TIMEOUT:-30}

# Every call of this script carries the cluster's admin token, once there is one.
export PURSER_TOKEN_FILE="$dir/admin.token"

client_port() { echo $((7599 + $1)); }
peer_port() { echo $((7699 + $1)); }

# The pid recorded for member $1, if that process is still alive.
running_pid() {
  local pidfile="$dir/n$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Polls "$@" every 0.2 s until it succeeds or $wait_timeout_s pass.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + wait_timeout_s))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${wait_timeout_s}s waiting for $what (logs in $dir/n*.log)" >&2
      return 1
    fi
    sleep 0.2
  done
}

has_leader() {
  "$bin" --endpoint "$endpoints" --output json --timeout 2s cluster status | grep -q '"role": "leader"'
}

start() {
  if [ -z "${PURSER_BIN:-}" ]; then
    purser_setup
    (cd "$repo" && cargo build --release --locked -p purser-cli)
  fi
  mkdir -p "$dir"
  for i in "${members[@]}"; do
    if pid=$(running_pid "$i"); then
      echo "member $i already runs (pid $pid)"
      continue
    fi
    nohup "$bin" serve --id "$i" \
      --listen "127.0.0.1:$(client_port "$i")" \
      --peer-listen "127.0.0.1:$(peer_port "$i")" \
      --data-dir "$dir/n$i" >>"$dir/n$i.log" 2>&1 </dev/null &
    echo $! >"$dir/n$i.pid"
    echo "member $i: pid $!, clients 127.0.0.1:$(client_port "$i"), peers 127.0.0.1:$(peer_port "$i")"
  done
  for i in "${members[@]}"; do
    wait_for "member $i to serve" grep -q "purser member serving" "$dir/n$i.log"
  done
  # A restarted cluster already has its membership and its token: initializing it again would
  # be refused.
  if [ ! -s "$dir/admin.token" ]; then
    "$bin" --endpoint "http://127.0.0.1:$(client_port 1)" cluster init \
      --token-file "$dir/admin.token" \
      --members "1=127.0.0.1:$(peer_port 1),2=127.0.0.1:$(peer_port 2),3=127.0.0.1:$(peer_port 3)"
  fi
  wait_for "a leader" has_leader
  "$bin" --endpoint "$endpoints" cluster status
}

stop() {
  local pids=() i pid
  for i in "${members[@]}"; do
    if pid=$(running_pid "$i"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$i:$pid")
    else
      rm -f "$dir/n$i.pid"
    fi
  done
  local deadline=$((SECONDS + stop_timeout_s))
  for entry in "${pids[@]}"; do
    i=${entry%%:*}
    pid=${entry#*:}
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "member $i (pid $pid) did not stop in ${stop_timeout_s}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    else
      echo "member $i (pid $pid) stopped"
    fi
    rm -f "$dir/n$i.pid"
  done
  [ ${#pids[@]} -gt 0 ] || echo "no member running (pid files in $dir)"
}

status() {
  if [ ! -x "$bin" ]; then
    echo "$bin is missing: run $0 start first" >&2
    exit 1
  fi
  "$bin" --endpoint "$endpoints" cluster status
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
