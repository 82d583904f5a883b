//! Faults on a seeded schedule: partitions (random halves, the leader isolated, a majority
//! ring, one-way), kill -9 and restart, SIGSTOP/SIGCONT pauses longer than the election
//! timeout. One fault at a time; each is undone before the next.

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
}

impl Fault {
    fn of(family: Family) -> Vec<Fault> {
        use Fault::*;
        let partitions = [
            PartitionHalves,
            PartitionIsolateLeader,
            PartitionRing,
            PartitionOneWay,
        ];
        match family {
            Family::All => vec![
                PartitionHalves,
                PartitionIsolateLeader,
                PartitionRing,
                PartitionOneWay,
                Kill,
                KillLeader,
                Pause,
                PauseLeader,
            ],
            Family::Partition => partitions.to_vec(),
            Family::Kill => vec![Kill, KillLeader],
            Family::Pause => vec![Pause, PauseLeader],
            Family::None => vec![],
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
        // Pauses last longer than the election timeout (1 s at most).
        let duration_ms = match fault {
            Fault::Pause | Fault::PauseLeader => rng.range(1_500, 6_000),
            Fault::Kill | Fault::KillLeader => rng.range(500, 5_000),
            _ => rng.range(2_000, 10_000),
        };
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

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("cluster")
    }

    /// Runs the schedule until its end or `stop_at`, then heals everything.
    pub async fn run(&self, steps: Vec<Step>, stop_at: Instant) {
        for step in steps {
            let quiet_end = Instant::now() + Duration::from_millis(step.quiet_ms);
            if quiet_end >= stop_at {
                break;
            }
            tokio::time::sleep_until(quiet_end).await;
            let (targets, detail) = self.inject(&step).await;
            *self.injected.lock().expect("counter") += 1;
            self.write("start", step.fault, &targets, detail);
            let end = (Instant::now() + Duration::from_millis(step.duration_ms)).min(stop_at);
            tokio::time::sleep_until(end).await;
            let detail = self.undo(&step, &targets);
            self.write("stop", step.fault, &targets, detail);
        }
        let _ = net::heal(self.nodes);
        let _ = self.cluster().restore_all();
    }

    async fn inject(&self, step: &Step) -> (Vec<u32>, String) {
        let mut rng = Rng::new(step.pick);
        let mut ids: Vec<u32> = (1..=self.nodes).collect();
        rng.shuffle(&mut ids);
        let leader = match step.fault {
            Fault::PartitionIsolateLeader | Fault::KillLeader | Fault::PauseLeader => {
                cluster::leader(&(1..=self.nodes).collect::<Vec<_>>()).await
            }
            _ => None,
        };
        let one = leader.unwrap_or(ids[0]);
        let result = match step.fault {
            Fault::PartitionHalves => {
                let minority: Vec<u32> = ids[..(self.nodes / 2) as usize].to_vec();
                let cut = |a: u32, b: u32| minority.contains(&a) != minority.contains(&b);
                net::partition(self.nodes, |to, from| !cut(to, from))
                    .map(|_| (minority.clone(), format!("minority {minority:?} | rest")))
            }
            Fault::PartitionIsolateLeader => {
                net::partition(self.nodes, |to, from| to != one && from != one)
                    .map(|_| (vec![one], format!("{one} isolated (leader: {leader:?})")))
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
                net::partition(self.nodes, ring).map(|_| (ids.clone(), format!("ring {ids:?}")))
            }
            Fault::PartitionOneWay => {
                // `one` hears nobody; everybody hears it.
                net::partition(self.nodes, |to, _| to != one)
                    .map(|_| (vec![one], format!("{one} receives nothing")))
            }
            Fault::Kill | Fault::KillLeader => {
                self.cluster().kill9(one);
                Ok((vec![one], format!("kill -9 {one} (leader: {leader:?})")))
            }
            Fault::Pause | Fault::PauseLeader => {
                self.cluster().pause(one);
                Ok((vec![one], format!("SIGSTOP {one} (leader: {leader:?})")))
            }
        };
        result.unwrap_or_else(|e| (vec![], format!("could not inject: {e}")))
    }

    fn undo(&self, step: &Step, targets: &[u32]) -> String {
        match step.fault {
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
            _ => match net::heal(self.nodes) {
                Ok(()) => "healed".into(),
                Err(e) => format!("heal failed: {e}"),
            },
        }
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
        let kills = schedule(3, Family::Kill, total);
        assert!(!kills.is_empty());
        assert!(kills
            .iter()
            .all(|s| matches!(s.fault, Fault::Kill | Fault::KillLeader)));
    }
}
