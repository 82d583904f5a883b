# Sourced by the project's scripts (test.sh, dev.sh, cluster.sh, jepsen.sh, bench-peers.sh):
# the one place that knows where builds go and what a fresh Debian machine lacks to build
# Purser.
#
#   . "$(dirname "$0")/setup.sh"
#   purser_setup [extra Debian packages...]
#
# Builds go to $CARGO_TARGET_DIR, by default ~/.cache/purser/target: one directory shared by
# every clone and by every script, so that RocksDB's C++ (most of a clean build) is compiled
# once per profile, not once per clone or per command.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/purser/target}"

# Runs "$@" as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs, with apt-get, the packages named in "$@" that are missing (each argument is a
# package name), then checks that cargo is there.
install_packages() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing: ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# What building Purser needs (a C/C++ compiler; libclang for the RocksDB bindings that bindgen
# generates), plus any extra packages named in "$@"; then cargo, which apt cannot provide.
purser_setup() {
  mkdir -p "$CARGO_TARGET_DIR"
  install_packages build-essential g++ libclang-dev "$@"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 1
  fi
}
