//! Faults on a seeded schedule: partitions (random halves, the leader isolated, a majority
//! ring, one-way), random packet loss, kill -9 and restart, SIGSTOP/SIGCONT pauses longer than
//! the election timeout, leadership transfers, a voter removed and added back, a follower cut
//! off while the others snapshot and purge their logs, damaged files of a stopped node
//! (`corrupt.rs`), wall-clock jumps (libfaketime), a leader's Raft clock running fast or slow,
//! and Raft messages delayed or duplicated (the last two through the `fault-hooks` control
//! file). One fault at a time; each is undone before the next.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::{self, Cluster};
use crate::history::Recorder;
use crate::net;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    All,
    Partition,
    Kill,
    Pause,
    /// Random packet loss (iptables `statistic`).
    Loss,
    /// Leadership transfer, and a voter removed and added back under load.
    Membership,
    /// A follower cut off while the others snapshot and purge their logs.
    Snapshot,
    /// Bit flips or truncation in a stopped node's RocksDB files.
    Corrupt,
    /// Wall-clock jumps of a node or the leader; the leader's Raft clock fast or slow.
    Clock,
    /// Raft messages delayed, or duplicated.
    Delay,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    PartitionHalves,
    PartitionIsolateLeader,
    PartitionRing,
    PartitionOneWay,
    Kill,
    KillLeader,
    Pause,
    PauseLeader,
    Loss,
    TransferLeader,
    RemoveVoter,
    SnapshotIsolated,
    Corrupt,
    ClockJump,
    ClockJumpLeader,
    ClockSkew,
    Delay,
    Duplicate,
}

impl Fault {
    fn of(family: Family) -> Vec<Fault> {
        use Fault::*;
        let partitions = vec![
            PartitionHalves,
            PartitionIsolateLeader,
            PartitionRing,
            PartitionOneWay,
        ];
        match family {
            Family::All => [
                partitions,
                vec![Kill, KillLeader, Pause, PauseLeader, Loss],
                vec![TransferLeader, RemoveVoter, SnapshotIsolated, Corrupt],
                vec![ClockJump, ClockJumpLeader, ClockSkew, Delay, Duplicate],
            ]
            .concat(),
            Family::Partition => partitions,
            Family::Kill => vec![Kill, KillLeader],
            Family::Pause => vec![Pause, PauseLeader],
            Family::Loss => vec![Loss],
            Family::Membership => vec![TransferLeader, RemoveVoter],
            Family::Snapshot => vec![SnapshotIsolated],
            Family::Corrupt => vec![Corrupt],
            Family::Clock => vec![ClockJump, ClockJumpLeader, ClockSkew],
            Family::Delay => vec![Delay, Duplicate],
            Family::None => vec![],
        }
    }

    /// How long the fault lasts (ms), drawn from the schedule's generator.
    fn duration_ms(self, rng: &mut Rng) -> u64 {
        match self {
            // Pauses last longer than the election timeout (1 s at most).
            Fault::Pause | Fault::PauseLeader => rng.range(1_500, 6_000),
            Fault::Kill | Fault::KillLeader => rng.range(500, 5_000),
            // The transfer itself is the fault; what follows is a settling time.
            Fault::TransferLeader => rng.range(500, 2_000),
            Fault::Corrupt => rng.range(2_000, 5_000),
            // Long enough for the others to write past the cut-off node before they purge.
            Fault::SnapshotIsolated => rng.range(4_000, 9_000),
            _ => rng.range(2_000, 10_000),
        }
    }
}

/// One step of the schedule: wait `quiet_ms`, inject `fault` for `duration_ms`. `pick` seeds
/// the random choice of targets.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub quiet_ms: u64,
    pub fault: Fault,
    pub duration_ms: u64,
    pub pick: u64,
}

/// The schedule for a run of `total`: a function of the seed alone.
pub fn schedule(seed: u64, family: Family, total: Duration) -> Vec<Step> {
    let faults = Fault::of(family);
    let mut rng = Rng::fork(seed, 0x6e65_6d65);
    let mut steps = Vec::new();
    let mut t = 0u64;
    let total_ms = total.as_millis() as u64;
    while !faults.is_empty() {
        let fault = *rng.pick(&faults);
        let quiet_ms = rng.range(1_000, 4_000);
        let duration_ms = fault.duration_ms(&mut rng);
        if t + quiet_ms + duration_ms > total_ms {
            break;
        }
        t += quiet_ms + duration_ms;
        steps.push(Step {
            quiet_ms,
            fault,
            duration_ms,
            pick: rng.next_u64(),
        });
    }
    steps
}

#[derive(Serialize)]
struct Record<'a> {
    t_ns: u64,
    phase: &'a str,
    fault: Fault,
    targets: &'a [u32],
    detail: String,
}

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub rec: Arc<Recorder>,
    pub log: Mutex<std::fs::File>,
    pub nodes: u32,
    pub injected: Mutex<u64>,
    /// Membership calls, through every node.
    pub admin: purser_client::Client,
    /// Nodes whose files were damaged (and their last log index before).
    pub corrupted: Mutex<std::collections::BTreeMap<u32, u64>>,
}

impl Nemesis {
    fn write(&self, phase: &str, fault: Fault, targets: &[u32], detail: String) {
        let record = Record {
            t_ns: self.rec.now_ns(),
            phase,
            fault,
            targets,
            detail,
        };
        let line = serde_json::to_string(&record).expect("a nemesis record serializes");
        let _ = writeln!(self.log.lock().expect("nemesis log"), "{line}");
    }

    pub(crate) fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("cluster")
    }

    fn ids(&self) -> Vec<u32> {
        (1..=self.nodes).collect()
    }

    /// Runs the schedule until its end or `stop_at`, then heals everything: the network, the
    /// processes, and the membership (every node a voter again).
    pub async fn run(&self, steps: Vec<Step>, stop_at: Instant) {
        for step in steps {
            let quiet_end = Instant::now() + Duration::from_millis(step.quiet_ms);
            if quiet_end >= stop_at {
                break;
            }
            tokio::time::sleep_until(quiet_end).await;
            let started = Instant::now();
            let (targets, detail) = self.inject(&step).await;
            *self.injected.lock().expect("counter") += 1;
            self.write("start", step.fault, &targets, detail);
            let end = (started + Duration::from_millis(step.duration_ms)).min(stop_at);
            tokio::time::sleep_until(end).await;
            let detail = self.undo(&step, &targets).await;
            self.write("stop", step.fault, &targets, detail);
        }
        self.heal_all().await;
    }

    /// The final heal: clocks and message faults, network, processes, membership.
    pub async fn heal_all(&self) {
        if let Err(e) = self.cluster().reset_faults() {
            self.write(
                "heal",
                Fault::ClockSkew,
                &[],
                format!("resetting faults: {e}"),
            );
        }
        let _ = net::heal(self.nodes);
        let _ = self.cluster().restore_all();
        for id in self.ids() {
            if self.started_then_exited(id).await {
                let detail = self.rejoin_fresh(id).await;
                self.write("heal", Fault::Corrupt, &[id], detail);
            }
        }
        let detail = self.ensure_voters(Duration::from_secs(60)).await;
        if !detail.is_empty() {
            self.write("heal", Fault::RemoveVoter, &[], detail);
        }
    }

    async fn inject(&self, step: &Step) -> (Vec<u32>, String) {
        let mut rng = Rng::new(step.pick);
        let mut ids = self.ids();
        rng.shuffle(&mut ids);
        let leader = match step.fault {
            Fault::PartitionHalves
            | Fault::PartitionRing
            | Fault::PartitionOneWay
            | Fault::Kill
            | Fault::Pause
            | Fault::Loss
            | Fault::ClockJump
            | Fault::Delay
            | Fault::Duplicate => None,
            _ => cluster::leader(&self.ids()).await,
        };
        let one = leader.unwrap_or(ids[0]);
        // A node other than the leader (the first of the shuffled ids that does not lead).
        let follower = ids
            .iter()
            .copied()
            .find(|&i| Some(i) != leader)
            .unwrap_or(ids[0]);
        let result = match step.fault {
            Fault::PartitionHalves
            | Fault::PartitionIsolateLeader
            | Fault::PartitionRing
            | Fault::PartitionOneWay => self.partition(step.fault, &ids, one, leader),
            Fault::Kill | Fault::KillLeader => {
                self.cluster().kill9(one);
                Ok((vec![one], format!("kill -9 {one} (leader: {leader:?})")))
            }
            Fault::Pause | Fault::PauseLeader => {
                self.cluster().pause(one);
                Ok((vec![one], format!("SIGSTOP {one} (leader: {leader:?})")))
            }
            Fault::Loss => self.loss(&mut rng, &ids),
            Fault::TransferLeader => Ok(self.transfer(leader, follower).await),
            Fault::RemoveVoter => Ok(self.remove_voter(leader, follower).await),
            Fault::SnapshotIsolated => self.snapshot_isolated(leader, follower).await,
            Fault::Corrupt => Ok(self.corrupt(&mut rng, follower).await),
            Fault::ClockJump | Fault::ClockJumpLeader => {
                Ok(self.clock_jump(&mut rng, one, leader).await)
            }
            Fault::ClockSkew => Ok(self.clock_skew(&mut rng, leader)),
            Fault::Delay | Fault::Duplicate => Ok(self.slow_network(step.fault, &mut rng, &ids)),
        };
        result.unwrap_or_else(|e| (vec![], format!("could not inject: {e}")))
    }

    fn partition(
        &self,
        fault: Fault,
        ids: &[u32],
        one: u32,
        leader: Option<u32>,
    ) -> Result<(Vec<u32>, String), net::NetError> {
        match fault {
            Fault::PartitionHalves => {
                let minority: Vec<u32> = ids[..(self.nodes / 2) as usize].to_vec();
                let cut = |a: u32, b: u32| minority.contains(&a) != minority.contains(&b);
                net::partition(self.nodes, |to, from| !cut(to, from))
                    .map(|_| (minority.clone(), format!("minority {minority:?} | rest")))
            }
            Fault::PartitionRing => {
                // Each node hears only its neighbours in a shuffled ring: a majority each for
                // 5 nodes, a bridge (two ends that cannot hear each other) for 3.
                let pos = |x: u32| ids.iter().position(|&i| i == x).unwrap_or(0);
                let n = ids.len();
                let ring = |to: u32, from: u32| {
                    let (a, b) = (pos(to), pos(from));
                    let d = a.abs_diff(b);
                    if n <= 3 {
                        d == 1
                    } else {
                        d == 1 || d == n - 1
                    }
                };
                net::partition(self.nodes, ring).map(|_| (ids.to_vec(), format!("ring {ids:?}")))
            }
            // `one` hears nobody; everybody hears it.
            Fault::PartitionOneWay => net::partition(self.nodes, |to, _| to != one)
                .map(|_| (vec![one], format!("{one} receives nothing"))),
            _ => net::partition(self.nodes, |to, from| to != one && from != one)
                .map(|_| (vec![one], format!("{one} isolated (leader: {leader:?})"))),
        }
    }

    /// Random loss of 10–30 % of the packets one node (or every node) receives.
    fn loss(&self, rng: &mut Rng, ids: &[u32]) -> Result<(Vec<u32>, String), net::NetError> {
        let percent = rng.range(10, 30);
        let targets: Vec<u32> = if rng.chance(50) {
            self.ids()
        } else {
            vec![ids[0]]
        };
        for &t in &targets {
            net::loss(t, percent)?;
        }
        Ok((
            targets.clone(),
            format!("{percent} % of the packets into {targets:?} dropped"),
        ))
    }

    async fn transfer(&self, leader: Option<u32>, to: u32) -> (Vec<u32>, String) {
        let Some(from) = leader else {
            return (vec![], "no leader to transfer from".into());
        };
        match cluster::transfer_leader(from, to).await {
            Ok(now) => (
                vec![from, to],
                format!("transfer-leader {from} -> {to}: leader now {now:?}"),
            ),
            Err(e) => (
                vec![from, to],
                format!("transfer-leader {from} -> {to}: {e}"),
            ),
        }
    }

    /// Removes a voter other than the leader (the others remain a majority of the rest).
    async fn remove_voter(&self, leader: Option<u32>, id: u32) -> (Vec<u32>, String) {
        if leader.is_none() {
            return (vec![], "no leader: nothing removed".into());
        }
        match cluster::remove(&self.admin, id).await {
            Ok(index) => (
                vec![id],
                format!("removed voter {id} at log index {index} (it keeps running)"),
            ),
            // Perhaps removed anyway: the final heal adds every node back.
            Err(e) => (vec![id], format!("remove {id}: {e}")),
        }
    }

    /// Cuts `id` off, lets the others write past it, then makes them snapshot and purge their
    /// logs: when healed, `id` can only catch up through a snapshot.
    async fn snapshot_isolated(
        &self,
        leader: Option<u32>,
        id: u32,
    ) -> Result<(Vec<u32>, String), net::NetError> {
        net::partition(self.nodes, |to, from| to != id && from != id)?;
        let before = cluster::status(id).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut done = Vec::new();
        for other in self.ids().into_iter().filter(|&o| o != id) {
            match cluster::snapshot(other, true).await {
                Ok(index) => done.push(format!("{other}: snapshot+purge at {index}")),
                Err(e) => done.push(format!("{other}: {e}")),
            }
        }
        Ok((
            vec![id],
            format!(
                "{id} isolated (leader: {leader:?}, its last log index {:?}); {}",
                before.map(|s| s.last_log_index),
                done.join("; ")
            ),
        ))
    }

    async fn undo(&self, step: &Step, targets: &[u32]) -> String {
        match step.fault {
            Fault::ClockJump | Fault::ClockJumpLeader => self.undo_clock_jump(targets).await,
            Fault::ClockSkew | Fault::Delay | Fault::Duplicate => {
                let cluster = self.cluster();
                let failed: Vec<String> = targets
                    .iter()
                    .filter_map(|&t| cluster.set_faults(t, &cluster::Faults::default()).err())
                    .collect();
                if failed.is_empty() {
                    "control files cleared".into()
                } else {
                    failed.join("; ")
                }
            }
            Fault::Kill | Fault::KillLeader => {
                let mut cluster = self.cluster();
                for &t in targets {
                    if let Err(e) = cluster.start(t) {
                        return format!("restart of {t} failed: {e}");
                    }
                }
                "restarted".into()
            }
            Fault::Pause | Fault::PauseLeader => {
                let mut cluster = self.cluster();
                for &t in targets {
                    cluster.resume(t);
                }
                "SIGCONT".into()
            }
            Fault::TransferLeader => "nothing to undo".into(),
            Fault::RemoveVoter => self.ensure_voters(Duration::from_secs(30)).await,
            Fault::SnapshotIsolated => self.heal_isolated(targets).await,
            Fault::Corrupt => self.corrupt_outcome(targets).await,
            _ => heal_network(self.nodes),
        }
    }

    /// Moves `id`'s wall clock (libfaketime) by seconds to an hour, either way. Aimed at the
    /// leader's timestamps: the replicated time must not follow the jump.
    async fn clock_jump(&self, rng: &mut Rng, id: u32, leader: Option<u32>) -> (Vec<u32>, String) {
        let magnitude = match rng.range(0, 9) {
            0..=3 => rng.range(2, 59) as i64,
            4..=7 => rng.range(60, 300) as i64,
            _ => 3_600,
        };
        let offset = if rng.chance(50) {
            magnitude
        } else {
            -magnitude
        };
        // For the record: whether the chosen node leads (a follower's clock matters once elected).
        let leader = match leader {
            Some(l) => Some(l),
            None => cluster::leader(&self.ids()).await,
        };
        let before = replicated_vs_real(&self.ids()).await;
        let mut detail = match self.cluster().set_clock_offset(id, offset) {
            Ok(()) => {
                format!("node {id} wall clock {offset:+} s (leader: {leader:?}); before: {before}")
            }
            Err(e) => return (vec![id], format!("could not inject: {e}")),
        };
        // Half the time a follower with the jumped clock is made leader: its first stamps must
        // continue the cluster's time, not its own.
        if let Some(from) = leader.filter(|&l| l != id && rng.chance(50)) {
            match cluster::transfer_leader(from, id).await {
                Ok(now) => detail.push_str(&format!("; leadership {from} -> {id}: now {now:?}")),
                Err(e) => detail.push_str(&format!("; leadership {from} -> {id}: {e}")),
            }
        }
        (vec![id], detail)
    }

    async fn undo_clock_jump(&self, targets: &[u32]) -> String {
        // Measured while the clock is still off: did the replicated time follow it?
        let during = replicated_vs_real(&self.ids()).await;
        let failed: Vec<String> = {
            let cluster = self.cluster();
            targets
                .iter()
                .filter_map(|&t| cluster.set_clock_offset(t, 0).err())
                .collect()
        };
        if failed.is_empty() {
            format!("wall clock restored; at the end: {during}")
        } else {
            format!(
                "restoring the wall clock: {}; at the end: {during}",
                failed.join("; ")
            )
        }
    }

    /// The leader's Raft clock (leases, heartbeats, election timers) runs fast, or slow within
    /// the bound leases assume: a slower leader would trust its lease after the followers
    /// stopped honouring it (see the README).
    fn clock_skew(&self, rng: &mut Rng, leader: Option<u32>) -> (Vec<u32>, String) {
        let Some(id) = leader else {
            return (vec![], "no leader to skew".into());
        };
        let (rate, how) = if rng.chance(50) {
            (1.0 + rng.range(10, 200) as f64 / 100.0, "fast")
        } else {
            (
                1.0 - rng.range(1, LEADER_SLOW_PPM_MAX) as f64 / 1e6,
                "slow, within the lease bound",
            )
        };
        let faults = cluster::Faults {
            clock_rate: Some(rate),
            ..Default::default()
        };
        match self.cluster().set_faults(id, &faults) {
            Ok(()) => (
                vec![id],
                format!("leader {id} Raft clock rate {rate} ({how})"),
            ),
            Err(e) => (vec![], format!("could not inject: {e}")),
        }
    }

    /// Outgoing Raft RPCs of every node (or one) held back a random time, or a share of them
    /// sent twice, the copy a little later (its answer dropped).
    fn slow_network(&self, fault: Fault, rng: &mut Rng, ids: &[u32]) -> (Vec<u32>, String) {
        let targets: Vec<u32> = if rng.chance(50) {
            self.ids()
        } else {
            vec![ids[0]]
        };
        let (faults, what) = if fault == Fault::Delay {
            let hi = rng.range(5, DELAY_MS_MAX);
            let lo = rng.range(0, hi / 2);
            (
                cluster::Faults {
                    delay_ms: Some((lo, hi)),
                    ..Default::default()
                },
                format!("outgoing Raft RPCs delayed {lo}-{hi} ms"),
            )
        } else {
            let percent = rng.range(10, 50) as u32;
            (
                cluster::Faults {
                    duplicate_percent: Some(percent),
                    ..Default::default()
                },
                format!("{percent} % of outgoing Raft RPCs sent twice (the copy 0-20 ms later)"),
            )
        };
        let cluster = self.cluster();
        let failed: Vec<String> = targets
            .iter()
            .filter_map(|&t| cluster.set_faults(t, &faults).err())
            .collect();
        if failed.is_empty() {
            (targets.clone(), format!("{what}: from {targets:?}"))
        } else {
            (targets, format!("could not inject: {}", failed.join("; ")))
        }
    }

    /// Heals, then watches the cut-off node catch up through a newer snapshot than it had.
    async fn heal_isolated(&self, targets: &[u32]) -> String {
        let Some(&id) = targets.first() else {
            return heal_network(self.nodes);
        };
        let had = cluster::status(id).await.and_then(|s| s.snapshot_index);
        let healed = heal_network(self.nodes);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = None;
        while Instant::now() < deadline {
            last = cluster::status(id).await;
            if last.as_ref().is_some_and(|s| s.snapshot_index > had) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match last {
            Some(s) if s.snapshot_index > had => format!(
                "{healed}; {id} installed a snapshot at {:?} (had {had:?}), applied {}",
                s.snapshot_index, s.applied_index
            ),
            Some(s) => format!(
                "{healed}; {id} has no newer snapshot within 10 s (had {had:?}), applied {}",
                s.applied_index
            ),
            None => format!("{healed}; {id} does not answer"),
        }
    }

    /// Adds back every node that is not a voter (a learner that catches up, then a voter),
    /// until all are or `within` passes. Says what it did.
    async fn ensure_voters(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut said = Vec::new();
        loop {
            let voters = cluster::voters(&self.ids()).await;
            let missing: Vec<u32> = match &voters {
                Some(v) => self.ids().into_iter().filter(|i| !v.contains(i)).collect(),
                None => self.ids(),
            };
            if voters.is_some() && missing.is_empty() {
                return said.join("; ");
            }
            if Instant::now() >= deadline {
                said.push(format!("gave up: voters {voters:?}"));
                return said.join("; ");
            }
            if let (Some(_), Some(&id)) = (&voters, missing.first()) {
                match cluster::add_voter(&self.admin, id).await {
                    Ok(index) => said.push(format!("{id} added back as a voter at {index}")),
                    Err(e) => said.push(format!("adding {id} back: {e}")),
                }
            } else {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// A leader's Raft clock may run slow by at most this (parts per million) in the `clock`
/// nemesis: over a lease (`election_timeout_max`, 1 s) that is 50 µs, less than a heartbeat's
/// one-way trip from the leader's send to the follower's receipt.
pub const LEADER_SLOW_PPM_MAX: u64 = 50;
/// The longest delay the `delay` nemesis puts on a Raft RPC (below the 500 ms minimum election
/// timeout, so that a leader is delayed, not deposed, by it alone).
pub const DELAY_MS_MAX: u64 = 150;

/// How far the replicated time (the leader's last stamp, as it says) is from the harness's
/// clock.
async fn replicated_vs_real(ids: &[u32]) -> String {
    let Some(leader) = cluster::leader(ids).await else {
        return "no leader".into();
    };
    match cluster::status(leader).await {
        Some(s) => {
            let diff = s.state_now_ms as i64 - purser_client::now_ms() as i64;
            format!(
                "replicated time {:+.1} s from the harness clock (leader {leader})",
                diff as f64 / 1000.0
            )
        }
        None => format!("leader {leader} does not answer"),
    }
}

fn heal_network(nodes: u32) -> String {
    match net::heal(nodes) {
        Ok(()) => "healed".into(),
        Err(e) => format!("heal failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_fixes_the_schedule() {
        let total = Duration::from_secs(120);
        let a = serde_json::to_string(&schedule(7, Family::All, total)).expect("json");
        let b = serde_json::to_string(&schedule(7, Family::All, total)).expect("json");
        let c = serde_json::to_string(&schedule(8, Family::All, total)).expect("json");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(schedule(7, Family::None, total).is_empty());
        let all: Vec<Fault> = schedule(7, Family::All, Duration::from_secs(3600))
            .iter()
            .map(|s| s.fault)
            .collect();
        for fault in [
            Fault::Loss,
            Fault::TransferLeader,
            Fault::RemoveVoter,
            Fault::SnapshotIsolated,
            Fault::Corrupt,
        ] {
            assert!(all.contains(&fault), "{fault:?} is in `all`");
        }
        for fault in [
            Fault::ClockJump,
            Fault::ClockJumpLeader,
            Fault::ClockSkew,
            Fault::Delay,
            Fault::Duplicate,
        ] {
            assert!(all.contains(&fault), "{fault:?} is in `all`");
        }
        let clock = schedule(1, Family::Clock, total);
        assert!(!clock.is_empty());
        assert!(clock.iter().all(|s| matches!(
            s.fault,
            Fault::ClockJump | Fault::ClockJumpLeader | Fault::ClockSkew
        )));
        let delay = schedule(2, Family::Delay, total);
        assert!(!delay.is_empty());
        assert!(delay
            .iter()
            .all(|s| matches!(s.fault, Fault::Delay | Fault::Duplicate)));
        let membership = schedule(3, Family::Membership, total);
        assert!(membership
            .iter()
            .all(|s| matches!(s.fault, Fault::TransferLeader | Fault::RemoveVoter)));
        let kills = schedule(3, Family::Kill, total);
        assert!(!kills.is_empty());
        assert!(kills
            .iter()
            .all(|s| matches!(s.fault, Fault::Kill | Fault::KillLeader)));
    }
}
