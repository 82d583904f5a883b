//! The network: one namespace per node (`pj-n1`, ...), veth pairs into a bridge (`pj-br0`)
//! that the harness creates, addresses in 10.77.0.0/24 (node i is 10.77.0.i, the bridge
//! 10.77.0.254 in the root namespace, where the clients run). Partitions are iptables rules
//! inside the nodes' namespaces; the root namespace's rules are never touched.

use std::process::{Command, Stdio};

/// Prefix of everything the harness creates: a stale leftover is recognized by it.
pub const PREFIX: &str = "pj-";
pub const BRIDGE: &str = "pj-br0";
pub const SUBNET_PREFIX: &str = "10.77.0";
pub const BRIDGE_ADDR: &str = "10.77.0.254";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{0}`: {1}")]
    Spawn(String, std::io::Error),
}

pub fn namespace(node: u32) -> String {
    format!("{PREFIX}n{node}")
}

pub fn address(node: u32) -> String {
    format!("{SUBNET_PREFIX}.{node}")
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Spawn(command.clone(), e))?;
    if !out.status.success() {
        return Err(NetError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, NetError> {
    run("ip", args)
}

/// iptables inside node `node`'s namespace.
fn iptables(node: u32, args: &[&str]) -> Result<String, NetError> {
    let ns = namespace(node);
    let mut full = vec!["netns", "exec", ns.as_str(), "iptables", "-w"];
    full.extend_from_slice(args);
    ip(&full)
}

/// Removes whatever an earlier run left: processes inside our namespaces, the namespaces,
/// the veths and the bridge. Best effort; returns what it removed.
pub fn clean_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !ns.starts_with(PREFIX) {
            continue;
        }
        // Only processes inside the harness's own namespaces: its earlier nodes.
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-CONT", pid]);
                let _ = run("kill", &["-KILL", pid]);
            }
        }
        let _ = ip(&["netns", "del", ns]);
        removed.push(format!("namespace {ns}"));
    }
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: pj-v1@if11: <...>"
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(PREFIX) && ip(&["link", "del", name]).is_ok() {
            removed.push(format!("link {name}"));
        }
    }
    removed
}

/// Creates the bridge and `nodes` namespaces wired to it.
pub fn create(nodes: u32) -> Result<(), NetError> {
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{BRIDGE_ADDR}/24"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    for i in 1..=nodes {
        let ns = namespace(i);
        let veth = format!("{PREFIX}v{i}");
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", BRIDGE])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", address(i)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Our own chain policy: start from a clean INPUT chain.
        iptables(i, &["-F", "INPUT"])?;
    }
    Ok(())
}

/// Removes the namespaces, veths and bridge (best effort).
pub fn destroy(nodes: u32) {
    for i in 1..=nodes {
        let _ = ip(&["netns", "del", &namespace(i)]);
        let _ = ip(&["link", "del", &format!("{PREFIX}v{i}")]);
    }
    let _ = ip(&["link", "del", BRIDGE]);
}

/// Node `to` drops everything it receives from `from` (one direction).
pub fn drop_from(to: u32, from: u32) -> Result<(), NetError> {
    iptables(to, &["-A", "INPUT", "-s", &address(from), "-j", "DROP"]).map(|_| ())
}

/// Removes every partition rule.
pub fn heal(nodes: u32) -> Result<(), NetError> {
    for i in 1..=nodes {
        iptables(i, &["-F", "INPUT"])?;
    }
    Ok(())
}

/// Cuts the nodes so that each node only receives from the nodes `reach(i)` allows.
pub fn partition(nodes: u32, reach: impl Fn(u32, u32) -> bool) -> Result<(), NetError> {
    for to in 1..=nodes {
        for from in 1..=nodes {
            if to != from && !reach(to, from) {
                drop_from(to, from)?;
            }
        }
    }
    Ok(())
}

/// Node `node` drops each packet it receives with probability `percent` / 100 (the iptables
/// `statistic` match; no netem on this kernel). Undone by `heal`.
pub fn loss(node: u32, percent: u64) -> Result<(), NetError> {
    let probability = format!("{:.2}", percent as f64 / 100.0);
    iptables(
        node,
        &[
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
            "-j",
            "DROP",
        ],
    )
    .map(|_| ())
}
