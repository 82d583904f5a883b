#!/usr/bin/env bash
# Purser against the systems people hand-roll a hierarchical budget on, side by side: the same
# four-level reserve/settle workload (purser-bench) against
#   purser           a 3-member Purser cluster (Raft, every write fsynced by a quorum), the
#                    client coalescing concurrent calls into Batch RPCs (purser-client)
#   purser-unbatched the same cluster, one RPC per call
#   redis-always     Redis 7, AOF with appendfsync always (Lua scripts)
#   redis-everysec   Redis 7, AOF with appendfsync everysec (may lose the last second)
#   postgres         PostgreSQL 15, synchronous_commit on (row locks)
#   etcd             a 3-member etcd 3.4 cluster (compare-and-swap transactions)
# and, at 64 clients, what TLS and tokens cost: two single-member Purser instances that differ
# only in that, `purser dev --no-auth` (plaintext, no tokens) against `purser dev` with
# --tls-cert (TLS, every call carrying a token), printed as one line after the table.
#
#   scripts/bench-peers.sh [--duration 10s] [--clients 1,16,64,256] [--warmup 3s]
#                          [--out bench-results.json]
#
# Meant for a fresh Debian 12 machine: it installs what is missing with apt-get (etcd-server,
# etcd-client, redis-server, postgresql, and the build's compiler and libclang), stops the
# distribution's own instances that the install started, builds `purser` and `purser-bench`
# (release) into $CARGO_TARGET_DIR (default ~/.cache/purser/target, like scripts/test.sh),
# then starts every system in a temporary directory, on 127.0.0.1 only, on ports of its own:
#   purser 27600-27602 (clients) 27700-27702 (peers), 27800 and 27810 (the single members;
#   peers +100, HTTP +200), etcd 23791-23793 (clients)
#   23801-23803 (peers), redis 26379 (always) 26380 (everysec), postgres 25432.
# It measures the disk's fsync latency there (every system's writes wait for it), runs each
# system at each client count, prints the table and writes the JSON array to --out. Every
# process it started is stopped, and the temporary directory removed, when it exits.
# A last Purser run at the largest client count lowers the organization's cap after the warm-up
# so that it runs out mid-run (first denial, zero overspend).
# Each run ends with an audit of the balances; a failed run or audit makes the exit status 1
# (after the table). PG_BIN=/usr/lib/postgresql/NN/bin picks another PostgreSQL.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

duration=10s
clients=1,16,64,256
warmup=3s
out="bench-results.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?--duration needs a value}; shift 2 ;;
    --clients) clients=${2:?--clients needs a value}; shift 2 ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
IFS=, read -r -a client_counts <<<"$clients"
for c in "${client_counts[@]}"; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "--clients: $c is not a positive number" >&2; exit 2; }
done

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/setup.sh"
wait_timeout_s=${BENCH_WAIT_TIMEOUT:-60}

# Stops and disables a service that apt-get just installed and may have started.
stop_distro_service() {
  local service=$1
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
  else
    as_root service "$service" stop >/dev/null 2>&1 || true
  fi
}

install_missing() {
  local need=() installed_services=() pkg
  command -v etcd >/dev/null 2>&1 || { need+=(etcd-server); installed_services+=(etcd); }
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
  command -v redis-server >/dev/null 2>&1 || { need+=(redis-server); installed_services+=(redis-server); }
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  if [ -z "${PG_BIN:-}" ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    need+=(postgresql)
    installed_services+=(postgresql)
  fi
  purser_setup "${need[@]}"
  # Debian starts a freshly installed server on its default port: this benchmark runs its
  # own instances, and the distribution's must not compete with them for CPU and disk.
  for pkg in "${installed_services[@]}"; do
    stop_distro_service "$pkg"
  done
}

install_missing
pg_bin=${PG_BIN:-$( (compgen -G '/usr/lib/postgresql/*/bin' || true) | sort -V | tail -n 1)}
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL server binaries in $pg_bin" >&2; exit 1; }

echo "== building purser and purser-bench (release, into $CARGO_TARGET_DIR)"
(cd "$repo" && cargo build --release --locked -p purser-cli -p purser-bench)
purser="$CARGO_TARGET_DIR/release/purser"
bench="$CARGO_TARGET_DIR/release/purser-bench"

work=$(mktemp -d -t purser-bench.XXXXXX)
# PostgreSQL runs as its own user, which must reach its data directory inside.
chmod 755 "$work"
pids=()
# The benchmark run in progress, if any (see run_child).
child=

cleanup() {
  local status=$? pid deadline
  trap - EXIT INT TERM
  for pid in $child "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 15))
  for pid in $child "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background and waits for it: unlike a foreground command, `wait` returns
# as soon as a signal arrives, so that INT or TERM stop the script at once.
run_child() {
  local status=0
  "$@" &
  child=$!
  wait "$child" || status=$?
  child=
  return "$status"
}

# Fails if something already listens on 127.0.0.1:$1.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port 127.0.0.1:$1 is already in use: stop what listens there and run again" >&2
    exit 1
  fi
}

# Polls "$@" every 0.2 s until it succeeds, for at most $wait_timeout_s.
wait_for() {
  local what=$1 log=$2
  shift 2
  local deadline=$((SECONDS + wait_timeout_s))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${wait_timeout_s}s waiting for $what; the end of $log:" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

# Starts "$@" in the background with its output in $work/$1.log, and remembers its pid.
spawn() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user, through
# setpriv, which execs (so that the pid kept for the server is the server's own).
as_postgres=()
if [ "$(id -u)" -eq 0 ]; then
  as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi

for port in 27600 27601 27602 27700 27701 27702 23791 23792 23793 23801 23802 23803 \
  26379 26380 25432; do
  port_free "$port"
done

echo "== starting the systems in $work"
etcd_cluster=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
etcd_endpoints=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
for i in 1 2 3; do
  spawn "etcd$i" etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new \
    --initial-cluster-token purser-bench
done

redis_port_always=26379
redis_port_everysec=26380
# The TLS + tokens pair: one member each, otherwise identical.
"$purser" certs init "$work/certs" --members 1 >/dev/null
spawn purser-open "$purser" dev --no-auth --listen 127.0.0.1:27800 --data-dir "$work/purser-open"
spawn purser-secure "$purser" dev --listen 127.0.0.1:27810 --data-dir "$work/purser-secure" \
  --tls-cert "$work/certs/member-1.pem" --tls-key "$work/certs/member-1.key"

for mode in always everysec; do
  port_var=redis_port_$mode
  mkdir -p "$work/redis-$mode"
  spawn "redis-$mode" redis-server --port "${!port_var}" --bind 127.0.0.1 --daemonize no \
    --save '' --appendonly yes --appendfsync "$mode" --dir "$work/redis-$mode"
done

mkdir -p "$work/pg" "$work/pg-run"
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$work/pg" "$work/pg-run"
"${as_postgres[@]}" "$pg_bin/initdb" -D "$work/pg" --auth=trust -U postgres >"$work/initdb.log" 2>&1 || {
  echo "initdb failed:" >&2
  cat "$work/initdb.log" >&2
  exit 1
}
spawn postgres "${as_postgres[@]}" "$pg_bin/postgres" -D "$work/pg" \
  -c listen_addresses=127.0.0.1 -c port=25432 -c unix_socket_directories="$work/pg-run" \
  -c synchronous_commit=on -c fsync=on -c max_connections=400
postgres_conninfo="host=127.0.0.1 port=25432 user=postgres dbname=postgres"

purser_endpoints=http://127.0.0.1:27600,http://127.0.0.1:27601,http://127.0.0.1:27602
for i in 1 2 3; do
  spawn "purser$i" "$purser" serve --id "$i" --listen "127.0.0.1:$((27599 + i))" \
    --peer-listen "127.0.0.1:$((27699 + i))" --data-dir "$work/purser$i"
done

for mode in always everysec; do
  port_var=redis_port_$mode
  wait_for "redis ($mode) on port ${!port_var}" "$work/redis-$mode.log" \
    sh -c "redis-cli -h 127.0.0.1 -p ${!port_var} ping | grep -q PONG"
done
wait_for "PostgreSQL on port 25432" "$work/postgres.log" \
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p 25432
wait_for "a healthy etcd cluster" "$work/etcd1.log" \
  env ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" endpoint health
for i in 1 2 3; do
  wait_for "Purser member $i to serve" "$work/purser$i.log" \
    grep -q "purser member serving" "$work/purser$i.log"
done
for name in purser-open purser-secure; do
  wait_for "Purser $name to serve" "$work/$name.log" grep -q "purser dev: listening" "$work/$name.log"
done
# The cluster's first token (scope /, admin): the CLI and purser-bench send it.
"$purser" --endpoint http://127.0.0.1:27600 cluster init --token-file "$work/admin.token" \
  --members "1=127.0.0.1:27700,2=127.0.0.1:27701,3=127.0.0.1:27702" >/dev/null
export PURSER_TOKEN_FILE="$work/admin.token"
PURSER_TOKEN=$(cat "$work/admin.token")
export PURSER_TOKEN
purser_has_leader() {
  "$purser" --endpoint "$purser_endpoints" --output json --timeout 2s cluster status |
    grep -q '"role": "leader"'
}
wait_for "a Purser leader" "$work/purser1.log" purser_has_leader
echo "all systems ready"

results="$work/results.jsonl"
echo "== fsync latency of the disk under $work"
"$bench" fsync-probe --dir "$work" --json "$results"

failed=()
for c in "${client_counts[@]}"; do
  for label in purser purser-unbatched redis-always redis-everysec postgres etcd; do
    extra=()
    case "$label" in
      purser) system=purser endpoints=$purser_endpoints ;;
      purser-unbatched) system=purser endpoints=$purser_endpoints extra=(--no-coalesce) ;;
      redis-always) system=redis endpoints=127.0.0.1:$redis_port_always ;;
      redis-everysec) system=redis endpoints=127.0.0.1:$redis_port_everysec ;;
      postgres) system=postgres endpoints=$postgres_conninfo ;;
      etcd) system=etcd endpoints=$etcd_endpoints ;;
    esac
    echo "== $label, $c clients"
    if ! run_child "$bench" run --system "$system" --label "$label" --endpoints "$endpoints" \
      --clients "$c" --duration "$duration" --warmup "$warmup" --json "$results" "${extra[@]}"; then
      failed+=("$label at $c clients")
    fi
  done
done

# What TLS and tokens cost, at 64 clients (table line "TLS + tokens").
for label in purser-1-open purser-1-tls-auth; do
  extra=()
  case "$label" in
    purser-1-open) endpoints=127.0.0.1:27800 ;;
    purser-1-tls-auth) endpoints=localhost:27810
      extra=(--ca "$work/certs/ca.pem" --token "$(cat "$work/purser-secure/admin.token")") ;;
  esac
  echo "== $label, 64 clients"
  if ! run_child "$bench" run --system purser --label "$label" --endpoints "$endpoints" \
    --clients 64 --duration "$duration" --warmup "$warmup" --json "$results" "${extra[@]}"; then
    failed+=("$label at 64 clients")
  fi
done

# The cap running out mid-run: the org's limit is lowered after the warm-up to what about half
# the run would spend; the run must show its first denial and still no overspend.
exhaust_clients=${client_counts[$((${#client_counts[@]} - 1))]}
echo "== purser, $exhaust_clients clients, the organization's cap runs out mid-run"
if ! run_child "$bench" run --system purser --label purser --mode exhaust \
  --endpoints "$purser_endpoints" --clients "$exhaust_clients" --duration "$duration" \
  --warmup "$warmup" --json "$results"; then
  failed+=("purser exhaustion at $exhaust_clients clients")
fi

echo "== results"
"$bench" table --input "$results" --out "$out"
echo "results written to $out"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed run or audit: %s\n' "${failed[@]}" >&2
  exit 1
fi
