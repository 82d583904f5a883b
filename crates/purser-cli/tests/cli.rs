//! End to end: the real `purser` binary against a `purser dev` it starts on a free port in a
//! temporary directory. Every wait is a bounded poll.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_purser");

/// A running `purser dev`; killed when dropped, also when a test panics.
struct Dev {
    child: Child,
    endpoint: String,
    log: PathBuf,
    /// Where `purser dev` keeps its `/` admin token (its ready line says), which `run`
    /// hands to the CLI through PURSER_TOKEN_FILE.
    token_file: Option<PathBuf>,
}

impl Dev {
    fn start(dir: &Path, name: &str) -> Dev {
        let mut command = Command::new(BIN);
        command
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"));
        Dev::spawn(command, dir, name)
    }

    /// Runs `command` (a `dev` or `serve`) with its stderr in `DIR/NAME.log` until it says
    /// where it listens.
    fn spawn(mut command: Command, dir: &Path, name: &str) -> Dev {
        let log = dir.join(format!("{name}.log"));
        let child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut dev = Dev {
            child,
            endpoint: String::new(),
            log,
            token_file: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = dev.log_text();
            if let Some(rest) = text.split("listening on ").nth(1) {
                dev.endpoint = rest.split_whitespace().next().unwrap().to_owned();
                dev.token_file = rest
                    .split("admin token in ")
                    .nth(1)
                    .and_then(|r| r.split(',').next())
                    .map(PathBuf::from);
                return dev;
            }
            if let Some(status) = dev.child.try_wait().unwrap() {
                panic!("purser exited ({status}) before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "purser did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[])
    }

    /// `run` with these environment variables set (over the admin token file).
    fn run_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let mut command = Command::new(BIN);
        command
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("PURSER_ENDPOINT")
            .env_remove("PURSER_TOKEN")
            .env_remove("PURSER_TOKEN_FILE");
        if let Some(file) = &self.token_file {
            command.env("PURSER_TOKEN_FILE", file);
        }
        let output = command
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out(args, output)
    }

    /// Runs with `--output json`, expects `code`, and returns the parsed stdout.
    fn json(&self, code: i32, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, code, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    /// Graceful stop through SIGTERM, as an init system or `scripts/cluster.sh stop` does.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "purser dev exited with {status} after SIGTERM"
                );
                return;
            }
            assert!(Instant::now() < deadline, "purser dev ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)] // `args` is only read through Debug, in assertion messages.
struct Out {
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

fn out(args: &[&str], output: std::process::Output) -> Out {
    Out {
        args: args.join(" "),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A refused command: exit 1, nothing on stdout, one `error: ...` line on stderr.
fn assert_error(out: &Out, needle: &str) {
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in {out:?}"
    );
}

#[test]
fn a_budget_from_creation_to_denial_commit_release_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let dev = Dev::start(dir.path(), "dev");

    // The tree: a root with its currency and no default cap, and a team below it.
    let root = dev.json(
        0,
        &[
            "node",
            "create",
            "acme",
            "--currency",
            "usd:6",
            "--no-default-cap",
        ],
    );
    assert_eq!(root["node_id"], 1);
    assert_eq!(root["path"], "acme");
    let team = dev.json(
        0,
        &[
            "node", "create", "acme/ml", "--kind", "team", "--tag", "env=prod",
        ],
    );
    assert_eq!(team["node_id"], 2);
    let limit = dev.json(
        0,
        &[
            "limit",
            "set",
            "acme/ml",
            "--currency",
            "usd",
            "--amount",
            "1.00",
            "--window",
            "lifetime",
        ],
    );
    assert_eq!(limit["amount"], "1");
    assert_eq!(limit["amount_minor"], 1_000_000);
    assert_eq!(limit["window"], "lifetime");
    assert_eq!(limit["mode"], "hard");

    // Reserve 0.30 at a time until the cap says no: three fit under 1.00, the fourth does not.
    let reserve = [
        "reserve",
        "acme/ml",
        "--currency",
        "usd",
        "--amount",
        "0.30",
        "--ttl",
        "10m",
    ];
    let mut granted = Vec::new();
    let denial = loop {
        assert!(granted.len() < 10, "never denied: {granted:?}");
        let mut args = vec!["--output", "json"];
        args.extend_from_slice(&reserve);
        args.extend_from_slice(&["--attr", "user=alice", "--attr", "feature=agent"]);
        let out = dev.run(&args);
        let answer: Value = serde_json::from_str(&out.stdout).unwrap();
        match out.code {
            0 => {
                assert_eq!(answer["result"], "granted", "{out:?}");
                assert_eq!(answer["amount_minor"], 300_000);
                granted.push(answer["reservation_id"].as_u64().unwrap());
            }
            3 => break answer,
            _ => panic!("{out:?}"),
        }
    };
    assert_eq!(granted.len(), 3);
    assert_eq!(denial["result"], "denied");
    let why = &denial["denial"];
    assert_eq!(why["node_path"], "acme/ml");
    assert_eq!(why["node_id"], 2);
    assert_eq!(why["rule"], "cap");
    assert_eq!(why["window"], "lifetime");
    assert_eq!(why["remaining"], "0.1");
    assert_eq!(why["remaining_minor"], 100_000);
    assert_eq!(why["requested"], "0.3");
    assert_eq!(
        why["retry_after_ms"],
        Value::Null,
        "a lifetime cap never frees up"
    );
    // The text form of a denial also exits 3 and says why.
    let out = dev.run(&reserve);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("denied: cap (lifetime) at acme/ml"),
        "{out:?}"
    );

    // Commit the first for less than it held, release the second.
    let id = granted[0].to_string();
    let settled = dev.json(0, &["commit", &id, "--amount", "0.1"]);
    assert_eq!(settled["result"], "settled");
    assert_eq!(settled["charged"], "0.1");
    assert_eq!(settled["released_minor"], 200_000);
    assert_eq!(settled["overrun_minor"], 0);
    let id = granted[1].to_string();
    let released = dev.json(0, &["release", &id]);
    assert_eq!(released["result"], "released");
    assert_eq!(released["amount"], "0.3");

    // Show: 0.1 spent, 0.3 still held by the third reservation, 0.6 left.
    let show = dev.json(0, &["show", "acme/ml"]);
    assert_eq!(show["status"], "active");
    assert_eq!(show["holds_open"], 1);
    let cap = &show["limits"][0];
    assert_eq!(cap["window"], "lifetime");
    assert_eq!(cap["spent"], "0.1");
    assert_eq!(cap["held"], "0.3");
    assert_eq!(cap["remaining"], "0.6");
    assert_eq!(show["accounts"][0]["spent_total_minor"], 100_000);
    assert_eq!(show["accounts"][0]["debt"], "0");
    let root_show = dev.json(0, &["show", "acme"]);
    assert_eq!(
        root_show["accounts"][0]["held"], "0.3",
        "holds count at every ancestor"
    );
    let text = dev.run(&["show", "acme/ml"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("lifetime"), "{text:?}");

    // Bad requests: exit 1, one line, and nothing changes.
    let before = (
        dev.json(0, &["show", "acme/ml"]),
        dev.json(0, &["show", "acme"]),
    );
    let bad: [(&[&str], &str); 7] = [
        (
            &[
                "reserve",
                "acme/nope",
                "--currency",
                "usd",
                "--amount",
                "0.1",
            ],
            "acme/nope",
        ),
        (
            &["reserve", "acme/ml", "--currency", "usd", "--amount", "-1"],
            "negative",
        ),
        (
            &[
                "reserve",
                "acme/ml",
                "--currency",
                "usd",
                "--amount",
                "0.0000001",
            ],
            "decimals",
        ),
        (
            &["reserve", "acme/ml", "--currency", "eur", "--amount", "1"],
            "eur",
        ),
        (
            &[
                "limit",
                "set",
                "acme/ml",
                "--currency",
                "usd",
                "--amount",
                "1",
                "--window",
                "fortnight",
            ],
            "window",
        ),
        (&["commit", "999", "--amount", "0.1"], "999"),
        (
            &["reserve", "acme/ml", "--currency", "usd", "--bogus"],
            "--bogus",
        ),
    ];
    for (args, needle) in bad {
        assert_error(&dev.run(args), needle);
    }
    let after = (
        dev.json(0, &["show", "acme/ml"]),
        dev.json(0, &["show", "acme"]),
    );
    assert_eq!(before, after);

    // A retry with the same request id is answered with the first outcome, not applied twice.
    let retry = [
        "reserve",
        "acme/ml",
        "--currency",
        "usd",
        "--amount",
        "0.05",
        "--request-id",
        "r-1",
    ];
    let first = dev.json(0, &retry);
    let second = dev.json(0, &retry);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["reservation_id"], second["reservation_id"]);
    assert_eq!(
        dev.json(0, &["show", "acme/ml"])["limits"][0]["held"],
        "0.35"
    );

    // SIGTERM stops it cleanly; a restart on the same directory serves the same state.
    dev.terminate();
    let dev = Dev::start(dir.path(), "dev-restarted");
    let again = dev.json(0, &["show", "acme/ml"]);
    assert_eq!(again["limits"][0]["spent"], "0.1");
    assert_eq!(again["limits"][0]["held"], "0.35");
    let status = dev.json(0, &["cluster", "status"]);
    assert_eq!(status[0]["role"], "leader");
    dev.terminate();
    eprintln!("end to end in {:?}", started.elapsed());
}

/// The meter from the command line: charges show up in `watch` (resumable by index), in
/// `report` as a table, CSV and JSON with exact totals, and in `usage` with a bar.
#[test]
fn watch_report_and_usage_show_where_the_money_went() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), "dev");
    dev.json(
        0,
        &[
            "node",
            "create",
            "acme",
            "--currency",
            "usd:6",
            "--no-default-cap",
        ],
    );
    dev.json(0, &["node", "create", "acme/ml", "--kind", "team"]);
    dev.json(
        0,
        &[
            "limit",
            "set",
            "acme/ml",
            "--currency",
            "usd",
            "--amount",
            "10",
            "--window",
            "month",
        ],
    );
    for (amount, model) in [("1.5", "gpt-5"), ("0.25", "claude"), ("2", "gpt-5")] {
        let attr = format!("model={model}");
        dev.json(
            0,
            &[
                "charge",
                "acme/ml",
                "--currency",
                "usd",
                "--amount",
                amount,
                "--attr",
                &attr,
            ],
        );
    }

    let watched = dev.run(&["watch", "--kind", "usage", "--limit", "3"]);
    assert_eq!(watched.code, 0, "{watched:?}");
    let events: Vec<Value> = watched
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["kind"] == "usage"));
    let amounts: Vec<u64> = events
        .iter()
        .map(|e| e["event"]["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(amounts, [1_500_000, 250_000, 2_000_000]);
    // Resuming after the second usage event gives exactly the third.
    let from = (events[1]["index"].as_u64().unwrap() + 1).to_string();
    let rest = dev.run(&["watch", "--kind", "usage", "--from", &from, "--limit", "1"]);
    let third: Value = serde_json::from_str(rest.stdout.trim()).unwrap();
    assert_eq!(third["index"], events[2]["index"]);

    let report = dev.json(
        0,
        &["report", "--from", "2020-01-01", "--group-by", "model"],
    );
    let rows = report["rows"].as_array().unwrap();
    let cost = |model: &str| {
        rows.iter()
            .find(|r| r["model"] == model)
            .map(|r| (r["requests"].as_u64().unwrap(), r["cost"].as_u64().unwrap()))
    };
    assert_eq!(cost("gpt-5"), Some((2, 3_500_000)));
    assert_eq!(cost("claude"), Some((1, 250_000)));
    let csv = dev.run(&[
        "report",
        "--from",
        "2020-01-01",
        "--group-by",
        "model",
        "--format",
        "csv",
    ]);
    assert!(
        csv.stdout.starts_with("model,currency,requests,"),
        "{csv:?}"
    );
    assert_eq!(csv.stdout.lines().count(), 3, "{csv:?}");
    let table = dev.run(&["report", "--from", "2020-01-01", "--group-by", "model"]);
    assert!(
        table.stdout.contains("MODEL") && table.stdout.contains("3500000"),
        "{table:?}"
    );
    assert_error(
        &dev.run(&["report", "--from", "2020-01-01", "--group-by", "color"]),
        "cannot group by",
    );

    let usage = dev.run(&["usage", "acme/ml"]);
    assert_eq!(usage.code, 0, "{usage:?}");
    assert!(usage.stdout.contains("3.75"), "{usage:?}");
    assert!(
        usage.stdout.contains("[#######.............] 37%"),
        "{usage:?}"
    );
    let usage = dev.json(0, &["usage", "acme/ml"]);
    assert_eq!(usage["limits"][0]["spent"], "3.75");
}

/// Usage errors are one line that names what is wrong, as clap words it, and exit 1.
#[test]
fn usage_errors_name_the_missing_or_unknown_argument() {
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("PURSER_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out(args, output)
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["reserve", "acme/ml", "--amount", "1"],
            "required arguments were not provided: --currency <CURRENCY>",
        ),
        (&["commit"], "<RESERVATION_ID>"),
        (&["cluster", "init"], "--members <MEMBERS>"),
        (&["show", "acme", "--bogus"], "'--bogus'"),
        (&["--output", "yaml", "show", "acme"], "'yaml'"),
        (
            &[
                "charge",
                "acme",
                "--currency",
                "usd",
                "--amount",
                "1",
                "--sent-at-ms",
                "0",
            ],
            "--sent-at-ms",
        ),
    ];
    for (args, needle) in cases {
        let out = run(args);
        assert_error(&out, needle);
        assert!(
            out.stderr.trim_end().ends_with("(see --help)")
                && !out.stderr.contains("For more information"),
            "one pointer to --help: {out:?}"
        );
    }
}

/// `purser serve` takes each setting from its flag, else its PURSER_* variable, else the
/// `--config` file, else the default, and says what it runs with.
#[test]
fn serve_settings_come_from_flags_then_environment_then_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("member.toml");
    let file_data = dir.path().join("file-data");
    std::fs::write(
        &file,
        format!(
            "id = 7\n\
             listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:0\"\n\
             data_dir = {file_data:?}\n\
             advertise = \"127.0.0.1:7607\"\n\
             http_listen = \"127.0.0.1:0\"\n\
             lease_reads = true\n\
             events_kept = 5000\n"
        ),
    )
    .unwrap();
    let serve = |envs: &[(&str, &str)], flags: &[&str], name: &str| {
        let mut command = Command::new(BIN);
        command.args(["serve", "--config"]).arg(&file).args(flags);
        for (key, value) in envs {
            command.env(key, value);
        }
        let member = Dev::spawn(command, dir.path(), name);
        let log = member.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("configuration: "))
            .unwrap_or_else(|| panic!("no configuration line in {log}"))
            .to_owned();
        member.terminate();
        line
    };

    // The file alone sets every key.
    let line = serve(&[], &[], "file");
    for setting in [
        "id=7 ",
        "data_dir=",
        "advertise=127.0.0.1:7607 ",
        "lease_reads=true ",
        "events_kept=5000",
    ] {
        assert!(line.contains(setting), "{setting:?} in {line}");
    }
    assert!(
        line.contains(&format!("data_dir={} ", file_data.display())),
        "{line}"
    );
    assert!(!line.contains("http_listen=none"), "{line}");

    // The environment beats the file; a flag beats both.
    let env_data = dir.path().join("env-data");
    let env_data = env_data.to_str().unwrap();
    let line = serve(
        &[
            ("PURSER_ID", "8"),
            ("PURSER_DATA_DIR", env_data),
            ("PURSER_LEASE_READS", "false"),
            ("PURSER_EVENTS_KEPT", "6000"),
        ],
        &["--id", "9", "--events-kept", "7000"],
        "layers",
    );
    for setting in [
        "id=9 ",
        &format!("data_dir={env_data} "),
        "advertise=127.0.0.1:7607 ",
        "lease_reads=false ",
        "events_kept=7000",
    ] {
        assert!(line.contains(setting), "{setting:?} in {line}");
    }
}

/// A `--config` file with a key `serve` does not read, or a value of the wrong type, is
/// refused before anything starts, with the key named; so is a bad PURSER_* value.
#[test]
fn serve_refuses_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |config: &str, envs: &[(&str, &str)]| {
        let file = dir.path().join("member.toml");
        std::fs::write(&file, config).unwrap();
        let output = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&file)
            .envs(envs.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out(&["serve", config], output)
    };
    let valid = "id = 1\nlisten = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n";
    assert_error(
        &serve(&format!("{valid}data_dirr = \"x\"\n"), &[]),
        "line 4 (data_dirr = \"x\"): unknown key `data_dirr`",
    );
    assert_error(
        &serve(&format!("{valid}events_kept = \"many\"\n"), &[]),
        "line 4 (events_kept = \"many\"): invalid type",
    );
    assert_error(
        &serve(valid, &[("PURSER_EVENTS_KEPT", "many")]),
        "'--events-kept <N>'",
    );
    assert_error(&serve(valid, &[]), "--data-dir is required");
}

/// `purser dev` keeps a `/` admin token in its data directory and the CLI uses it; a token
/// made for a subtree reads there and nowhere else, and stops working once revoked.
#[test]
fn tokens_scope_what_the_cli_may_do() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), "dev");
    let file = dev
        .token_file
        .clone()
        .expect("the ready line names the token file");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.trim().starts_with("purser_"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's alone");

    for root in ["acme", "beta"] {
        dev.json(
            0,
            &[
                "node",
                "create",
                root,
                "--currency",
                "usd:2",
                "--no-default-cap",
            ],
        );
    }
    let created = dev.json(
        0,
        &[
            "token", "create", "--scope", "acme", "--access", "viewer", "--ttl", "1h", "--name",
            "ci",
        ],
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("purser_"), "{created}");
    assert_eq!(created["scope"], "acme");
    assert_eq!(created["access"], "viewer");
    assert!(created["expires_at"].is_string(), "{created}");
    let id = created["token_id"].as_u64().unwrap().to_string();

    let viewer = [("PURSER_TOKEN", token.as_str())];
    let shown = dev.run_with(&["--output", "json", "show", "acme"], &viewer);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert_error(
        &dev.run_with(&["show", "beta"], &viewer),
        "permission denied",
    );
    assert_error(
        &dev.run_with(
            &["charge", "acme", "--currency", "usd", "--amount", "1"],
            &viewer,
        ),
        "permission denied",
    );

    // Listed without a secret; revoked, it authorizes nothing.
    let listed = dev.json(0, &["token", "list", "--scope", "acme"]);
    assert!(!listed.to_string().contains(&token), "{listed}");
    assert_eq!(listed["tokens"][0]["name"], "ci");
    dev.json(0, &["token", "revoke", &id]);
    assert_error(&dev.run_with(&["show", "acme"], &viewer), "revoked");
    assert_error(
        &dev.run_with(&["show", "acme"], &[("PURSER_TOKEN", "purser_0")]),
        "unauthenticated",
    );
}

/// `purser certs init` makes what `serve` needs for TLS on both ports; the CLI reaches such a
/// member with `--ca` (https) and its token, and a second `certs init` into the same
/// directory is refused.
#[test]
fn a_member_served_over_tls_answers_the_cli_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new(BIN)
        .args(["certs", "init"])
        .arg(&certs)
        .args(["--members", "1"])
        .output()
        .unwrap();
    let made = out(&["certs", "init"], made);
    assert_eq!(made.code, 0, "{made:?}");
    for file in [
        "ca.pem",
        "ca.key",
        "member-1.pem",
        "member-1.key",
        "client.pem",
        "client.key",
    ] {
        assert!(made.stdout.contains(file), "{file} in {made:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.join("member-1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Command::new(BIN)
        .args(["certs", "init"])
        .arg(&certs)
        .output()
        .unwrap();
    assert_error(&out(&["certs", "init"], again), "already holds a CA");

    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--tls-cert",
            &file("member-1.pem"),
            "--tls-key",
            &file("member-1.key"),
        ])
        .args([
            "--peer-cert",
            &file("member-1.pem"),
            "--peer-key",
            &file("member-1.key"),
        ])
        .args(["--peer-ca", &file("ca.pem")]);
    let member = Dev::spawn(command, dir.path(), "serve");
    let log = member.log_text();
    let peer = log
        .split("(peers ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_owned();
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_owned();
    let endpoint = format!("localhost:{}", port(&member.endpoint));
    let cli = |args: &[&str], envs: &[(&str, String)]| {
        let output = Command::new(BIN)
            .args([
                "--endpoint",
                &endpoint,
                "--ca",
                &file("ca.pem"),
                "--output",
                "json",
            ])
            .args(args)
            .env_remove("PURSER_TOKEN")
            .env_remove("PURSER_TOKEN_FILE")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        out(args, output)
    };
    let members = format!("1=localhost:{}@{endpoint}", port(&peer));
    let init = cli(&["cluster", "init", "--members", &members], &[]);
    assert_eq!(init.code, 0, "{init:?}");
    let init: Value = serde_json::from_str(&init.stdout).unwrap();
    let token = init["admin_token"].as_str().unwrap().to_owned();
    let with_token = [("PURSER_TOKEN", token)];
    let created = cli(
        &[
            "node",
            "create",
            "acme",
            "--currency",
            "usd:2",
            "--no-default-cap",
        ],
        &with_token,
    );
    assert_eq!(created.code, 0, "{created:?}");
    let shown = cli(&["show", "acme"], &with_token);
    assert_eq!(shown.code, 0, "{shown:?}");
    // Without the CA the CLI speaks plaintext to a TLS port and gets no answer.
    let plain = Command::new(BIN)
        .args(["--endpoint", &endpoint, "--timeout", "2s", "show", "acme"])
        .env("PURSER_TOKEN", &with_token[0].1)
        .output()
        .unwrap();
    assert_eq!(out(&["show"], plain).code, 1);
    member.terminate();
}

/// `purser dev --tls-cert/--tls-key` serves its client port over TLS with tokens on: the CLI
/// reaches it with `--ca` and the token file dev wrote, and not in plaintext.
#[test]
fn dev_serves_over_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new(BIN)
        .args(["certs", "init"])
        .arg(&certs)
        .args(["--members", "1"])
        .output()
        .unwrap();
    assert_eq!(out(&["certs", "init"], made).code, 0);
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let mut command = Command::new(BIN);
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--tls-cert", &file("member-1.pem")])
        .args(["--tls-key", &file("member-1.key")]);
    let member = Dev::spawn(command, dir.path(), "dev");
    let token_file = member.token_file.clone().expect("auth is on");
    let port = member.endpoint.rsplit(':').next().unwrap().to_owned();
    let endpoint = format!("localhost:{port}");
    let cli = |tls: bool| {
        let mut command = Command::new(BIN);
        command
            .args(["--endpoint", &endpoint, "--timeout", "5s"])
            .arg("--token-file")
            .arg(&token_file)
            .env_remove("PURSER_TOKEN")
            .env_remove("PURSER_CA");
        if tls {
            command.args(["--ca", &file("ca.pem")]);
        }
        let args = ["node", "create", "acme", "--currency", "usd:2"];
        out(&args, command.args(args).output().unwrap())
    };
    assert_eq!(cli(false).code, 1, "plaintext gets no answer");
    let created = cli(true);
    assert_eq!(created.code, 0, "{created:?}");
    member.terminate();
}
