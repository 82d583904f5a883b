#!/usr/bin/env bash
# The project's test command: installs what a fresh machine lacks, then runs formatting,
# lint and every test of the workspace. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the clone, reused between runs, so that a fresh clone only
# rebuilds what changed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/purser/target}"
mkdir -p "$CARGO_TARGET_DIR"

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# Proptest case counts are tuned for CI; raise them locally with PROPTEST_CASES.
cargo test --workspace --locked
echo "== all tests passed"
