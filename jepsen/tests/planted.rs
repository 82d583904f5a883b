//! Test the tester: the harness must catch a bug planted in the server.
//!
//! Needs root (network namespaces, iptables) and a `purser` built with the planted bugs:
//!
//! ```sh
//! cargo build --release -p purser-cli --features planted-bugs
//! cp "$CARGO_TARGET_DIR/release/purser" "$CARGO_TARGET_DIR/release/purser-planted"
//! cargo build --release -p purser-cli          # the normal binary back in place
//! PURSER_PLANTED_BIN="$CARGO_TARGET_DIR/release/purser-planted" \
//!   cargo test -p purser-jepsen --test planted -- --ignored
//! ```
//!
//! `scripts/jepsen.sh --planted double-apply` (or `skip-root-cap`) does the same for one bug
//! in one step.

use std::path::PathBuf;
use std::process::Command;

fn planted_bin() -> PathBuf {
    let bin = std::env::var("PURSER_PLANTED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/purser/target",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            PathBuf::from(target).join("release/purser-planted")
        });
    assert!(
        bin.is_file(),
        "{} is missing: see this file's header",
        bin.display()
    );
    bin
}

/// One harness at a time (a second one refuses to start while the first runs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the harness against the planted binary; returns its exit code and verdicts.
fn run(bug: &str, nemesis: &str, seed: &str) -> (i32, serde_json::Value) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("purser-jepsen-planted-{bug}-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(env!("CARGO_BIN_EXE_purser-jepsen"))
        .args(["run", "--time", "25s", "--nodes", "3", "--seed", seed])
        .args(["--nemesis", nemesis])
        .arg("--dir")
        .arg(&dir)
        .env("PURSER_BIN", planted_bin())
        .env("PURSER_PLANTED_BUG", bug)
        .status()
        .expect("run purser-jepsen");
    let verdicts = std::fs::read(dir.join("verdicts.json")).expect("verdicts.json");
    (
        status.code().unwrap_or(-1),
        serde_json::from_slice(&verdicts).expect("verdicts are JSON"),
    )
}

fn failed(verdicts: &serde_json::Value) -> Vec<String> {
    verdicts["verdicts"]
        .as_array()
        .expect("a verdict list")
        .iter()
        .filter(|v| v["valid"] == false)
        .map(|v| v["checker"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
#[ignore = "needs root, network namespaces and a purser built with --features planted-bugs"]
fn double_apply_is_caught() {
    for nemesis in ["none", "all"] {
        let (code, verdicts) = run("double-apply", nemesis, "11");
        let failed = failed(&verdicts);
        assert_eq!(code, 1, "the harness must fail ({nemesis}): {failed:?}");
        assert!(
            failed
                .iter()
                .any(|c| c == "idempotency" || c == "conservation"),
            "double-apply must break idempotency or conservation ({nemesis}): {failed:?}"
        );
    }
}

#[test]
#[ignore = "needs root, network namespaces and a purser built with --features planted-bugs"]
fn skip_root_cap_is_caught() {
    for nemesis in ["none", "all"] {
        let (code, verdicts) = run("skip-root-cap", nemesis, "12");
        let failed = failed(&verdicts);
        assert_eq!(code, 1, "the harness must fail ({nemesis}): {failed:?}");
        assert!(
            failed.iter().any(|c| c == "no-overspend"),
            "skip-root-cap must overshoot a root's cap ({nemesis}): {failed:?}"
        );
    }
}

#[test]
#[ignore = "needs root, network namespaces and a purser built with --features planted-bugs"]
fn the_same_binary_without_the_bug_armed_passes() {
    let (code, verdicts) = run("none", "none", "11");
    assert_eq!(code, 0, "{:?}", failed(&verdicts));
}
