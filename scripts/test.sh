#!/usr/bin/env bash
# The project's test command: installs what a fresh machine lacks, then runs formatting,
# lint and every test of the workspace. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs what a fresh machine lacks; builds go to the shared $CARGO_TARGET_DIR.
. scripts/setup.sh
purser_setup
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# A one-off run gains nothing from incremental caches; they cost gigabytes of disk.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the purser binary that process-level tests run)"
cargo build -p purser-cli --locked
echo "== cargo test"
# Proptest case counts are tuned for CI; raise them locally with PROPTEST_CASES.
cargo test --workspace --locked
echo "== chaos harness: a fixed seed, a fresh seed, and the planted bugs it must catch"
# Real processes in network namespaces under every nemesis (root needed); a failing checker
# fails the test command. Longer runs: scripts/jepsen.sh --time 30m.
scripts/jepsen.sh --time 2m --seed 3
scripts/jepsen.sh --time 2m
scripts/jepsen.sh --planted double-apply --time 25s --seed 11
scripts/jepsen.sh --planted skip-root-cap --time 25s --seed 12
echo "== all tests passed"
