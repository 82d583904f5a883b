#!/usr/bin/env bash
# The run command: installs what a fresh Debian machine lacks, builds the `purser` binary
# (release) into the build directory the test command shares, makes `purser` callable from the
# shell, and starts Purser on its embedded default: a ready single-node cluster, data in
# ./purser-data, clients on 127.0.0.1:7600, reports over HTTP on 127.0.0.1:7800.
#
#   scripts/dev.sh [purser dev options...]     e.g. scripts/dev.sh --data-dir /tmp/p
#
# `purser` is linked into ~/.cargo/bin (on the PATH of every rustup install), pointing at
# $CARGO_TARGET_DIR/release/purser, so a later build is picked up without linking again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
purser_setup

cargo build --release --locked -p purser-cli
bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
mkdir -p "$bin_dir"
ln -sf "$CARGO_TARGET_DIR/release/purser" "$bin_dir/purser"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "note: add $bin_dir to PATH to call purser from another shell" >&2 ;;
esac
exec "$CARGO_TARGET_DIR/release/purser" dev "$@"
