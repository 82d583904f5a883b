//! One outcome per request id on the leader.
//!
//! A denial changes nothing, so the state machine does not remember it, and the leader's fast
//! path answers denials without a log entry at all. Both are safe for a request id only while
//! no other attempt of the same id can still take effect: a client that timed out retries
//! with the same id, and its first attempt may still sit in the batcher queue, in an entry
//! appended but not yet committed, or in the network on its way here. Had the retry been
//! denied and the first attempt then granted, the client would hold "denied" while a hold
//! exists (the chaos harness found exactly that: a retry fast-denied during a partition, the
//! first attempt granted once a cap was raised).
//!
//! So this member tracks, per request id, the writes it has queued and not yet seen answered
//! by Raft, and the denials it has answered:
//! - the fast path stays off for an id with an attempt in flight (the log orders them);
//! - an attempt arriving after a denial of its id gets that denial again, and is not written,
//!   unless an attempt is in flight or the id took effect after all (two attempts written
//!   while none was answered: the first denied, the second, after room was made, applied;
//!   the state machine remembers the second). That is decided after a read barrier, so the
//!   applied state holds every attempt that committed anywhere, and a member that is no
//!   longer the leader answers nothing from here.
//!
//! Attempts of an earlier leader need nothing here: once this leader has committed an entry
//! of its own term (every read barrier waits for that), each of them is either applied, and
//! so remembered by the state machine, or can never commit.
//!
//! Denials are kept for the request retention (plus the clock skew allowed), after which the
//! state machine refuses the id as too old anyway, and at most [`DENIALS_KEPT_MAX`] at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use purser_core::{limits, Command, Denial};

/// Denials remembered at once (about 150 bytes each). When full, the oldest is forgotten and
/// the fast path stands aside, so a denial written through the log stays the only kind that
/// can be forgotten early, and only for an attempt that lingered longer than all the others.
pub const DENIALS_KEPT_MAX: usize = 200_000;

/// A denial answered for a request id, and the log index it was decided at.
#[derive(Clone, Debug)]
pub struct Answer {
    pub denial: Denial,
    pub log_index: u64,
}

#[derive(Default)]
struct Inner {
    in_flight: HashMap<u128, u32>,
    denied: HashMap<u128, Answer>,
    /// (forget after, in wall-clock ms; key), in the order the denials were answered.
    order: VecDeque<(u64, u128)>,
}

#[derive(Default)]
pub struct Answered {
    inner: Mutex<Inner>,
}

/// What [`Answered::begin`] decided for a write.
pub enum Begin {
    /// Write it; the ticket marks the attempt in flight until it is dropped.
    Write(Option<Ticket>),
    /// An earlier attempt of this request id was denied: take a read barrier and ask again.
    Confirm,
    /// An earlier attempt of this request id was denied, and none took effect: answer the
    /// same.
    Denied(Answer),
}

/// An attempt in flight. Held by the batcher until Raft answered the entry it went into, so
/// a caller that gave up does not end it early.
pub struct Ticket {
    answered: Arc<Answered>,
    key: u128,
    sent_at_ms: u64,
}

impl Ticket {
    /// Records the denial this attempt got, before the caller sees it.
    pub fn denied(&self, answer: Answer, retention_ms: u64, now_ms: u64) {
        let mut inner = self.answered.lock();
        inner.remember(self.key, self.sent_at_ms, answer, retention_ms, now_ms);
    }

    /// This attempt took effect: an earlier denial of the id is void.
    pub fn applied(&self) {
        self.answered.lock().denied.remove(&self.key);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.answered.lock();
        if let Some(count) = inner.in_flight.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                inner.in_flight.remove(&self.key);
            }
        }
    }
}

/// The fast path's view, held while it decides: no attempt of the id can start meanwhile.
pub struct Decision<'a> {
    inner: MutexGuard<'a, Inner>,
    key: u128,
    sent_at_ms: u64,
}

impl Decision<'_> {
    /// The denial an earlier attempt of this id got. Ask after [`Decision::must_write`], and
    /// only answer it if the id is not remembered as applied.
    pub fn earlier(&self) -> Option<Answer> {
        self.inner.denied.get(&self.key).cloned()
    }

    /// Whether the fast path must stand aside: an attempt is in flight, or no room is left
    /// to remember another denial.
    pub fn must_write(&self) -> bool {
        self.inner.in_flight.contains_key(&self.key) || self.inner.denied.len() >= DENIALS_KEPT_MAX
    }

    /// Records the denial the fast path is about to answer.
    pub fn deny(mut self, answer: Answer, retention_ms: u64, now_ms: u64) {
        let (key, sent_at_ms) = (self.key, self.sent_at_ms);
        self.inner
            .remember(key, sent_at_ms, answer, retention_ms, now_ms);
    }
}

fn key_of(command: &Command) -> Option<(u128, u64)> {
    let request = command.request.as_ref()?;
    Some((
        purser_core::request_key(command.actor, &request.id),
        request.sent_at_ms,
    ))
}

impl Answered {
    /// Poisoned only by a panic between two updates of the maps, which would leave an
    /// attempt counted in flight forever or a denial half-recorded: one outcome per request id
    /// could no longer be promised, so the member stops rather than answer on it.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(_) => panic!("the answered requests are unusable: a panic struck mid-update"),
        }
    }

    /// Called before a command is queued for the log. `confirmed`: a read barrier returned
    /// since the last [`Begin::Confirm`]; `remembers` tells whether the applied state
    /// remembers the request id as applied.
    pub fn begin(
        self: &Arc<Self>,
        command: &Command,
        confirmed: bool,
        remembers: impl FnOnce(Option<u64>, &str) -> bool,
    ) -> Begin {
        let (Some((key, sent_at_ms)), Some(request)) = (key_of(command), &command.request) else {
            return Begin::Write(None);
        };
        let mut inner = self.lock();
        if !inner.in_flight.contains_key(&key) {
            if let Some(answer) = inner.denied.get(&key) {
                if !confirmed {
                    return Begin::Confirm;
                }
                if !remembers(command.actor, &request.id) {
                    return Begin::Denied(answer.clone());
                }
                inner.denied.remove(&key);
            }
        }
        *inner.in_flight.entry(key).or_insert(0) += 1;
        Begin::Write(Some(Ticket {
            answered: self.clone(),
            key,
            sent_at_ms,
        }))
    }

    /// Locks the fast path's decision for `command` (None: it carries no request id).
    pub fn decide(&self, command: &Command) -> Option<Decision<'_>> {
        let (key, sent_at_ms) = key_of(command)?;
        Some(Decision {
            inner: self.lock(),
            key,
            sent_at_ms,
        })
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    #[cfg(test)]
    fn denials_kept(&self) -> usize {
        self.lock().denied.len()
    }
}

impl Inner {
    fn remember(
        &mut self,
        key: u128,
        sent_at_ms: u64,
        answer: Answer,
        retention_ms: u64,
        now_ms: u64,
    ) {
        self.forget_expired(now_ms);
        while self.denied.len() >= DENIALS_KEPT_MAX {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.denied.remove(&oldest);
        }
        // Counted from whichever is later, so that a request stamped in the future (within
        // the skew allowed) is not forgotten while the state machine would still take it.
        let until = sent_at_ms
            .max(now_ms)
            .saturating_add(retention_ms)
            .saturating_add(limits::CLOCK_SKEW_MS_MAX);
        if self.denied.insert(key, answer).is_none() {
            self.order.push_back((until, key));
        }
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(&(until, key)) = self.order.front() {
            if until >= now_ms {
                break;
            }
            self.order.pop_front();
            self.denied.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purser_core::{DenyRule, Op};

    fn reserve(id: &str) -> Command {
        Command::new(id, 1_000, Op::Tick)
    }

    fn denial() -> Answer {
        Answer {
            denial: Denial {
                node: 1,
                rule: DenyRule::Cap,
                window: None,
                remaining: 0,
                requested: 5,
                retry_after_ms: None,
            },
            log_index: 7,
        }
    }

    #[test]
    fn the_fast_path_stands_aside_while_an_attempt_is_in_flight() {
        let answered = Arc::new(Answered::default());
        let command = reserve("r1");
        let Begin::Write(Some(ticket)) = begin(&answered, &command, false) else {
            panic!("a first attempt is written");
        };
        assert!(answered
            .decide(&command)
            .expect("a request id")
            .must_write());
        drop(ticket);
        assert!(!answered
            .decide(&command)
            .expect("a request id")
            .must_write());
        assert_eq!(answered.in_flight(), 0);
    }

    fn begin(answered: &Arc<Answered>, command: &Command, remembered: bool) -> Begin {
        match answered.begin(command, false, |_, _| remembered) {
            Begin::Confirm => answered.begin(command, true, |_, _| remembered),
            other => other,
        }
    }

    #[test]
    fn an_attempt_after_a_denial_gets_the_same_denial_and_is_not_written() {
        let answered = Arc::new(Answered::default());
        let command = reserve("r1");
        answered
            .decide(&command)
            .expect("a request id")
            .deny(denial(), 600_000, 2_000);
        assert!(
            matches!(
                answered.begin(&command, false, |_, _| false),
                Begin::Confirm
            ),
            "answered only after a read barrier"
        );
        match begin(&answered, &command, false) {
            Begin::Denied(answer) => assert_eq!(answer.log_index, 7),
            _ => panic!("a late attempt of a denied id must not be written"),
        }
        // Another id is unaffected.
        assert!(matches!(
            begin(&answered, &reserve("r2"), false),
            Begin::Write(Some(_))
        ));
    }

    #[test]
    fn a_denial_is_void_once_another_attempt_took_effect() {
        let answered = Arc::new(Answered::default());
        let command = reserve("r1");
        // Two attempts written while neither was answered: the first denied...
        let Begin::Write(Some(first)) = begin(&answered, &command, false) else {
            panic!("written");
        };
        let Begin::Write(Some(second)) = begin(&answered, &command, false) else {
            panic!("written");
        };
        first.denied(denial(), 600_000, 2_000);
        drop(first);
        // ...a third attempt while the second is in flight goes behind it in the log...
        assert!(matches!(
            begin(&answered, &command, false),
            Begin::Write(Some(_))
        ));
        // ...and the second applied: the denial is void.
        second.applied();
        drop(second);
        assert!(matches!(
            begin(&answered, &command, false),
            Begin::Write(Some(_))
        ));
    }

    #[test]
    fn a_denial_is_not_answered_for_an_id_the_state_remembers() {
        let answered = Arc::new(Answered::default());
        let command = reserve("r1");
        answered
            .decide(&command)
            .expect("a request id")
            .deny(denial(), 600_000, 2_000);
        // Applied through another leader meanwhile: write it, to get the duplicate's answer.
        assert!(matches!(
            begin(&answered, &command, true),
            Begin::Write(Some(_))
        ));
    }

    #[test]
    fn a_denial_through_the_log_is_remembered_by_its_ticket() {
        let answered = Arc::new(Answered::default());
        let command = reserve("r1");
        let Begin::Write(Some(ticket)) = begin(&answered, &command, false) else {
            panic!("a first attempt is written");
        };
        ticket.denied(denial(), 600_000, 2_000);
        drop(ticket);
        assert!(matches!(
            begin(&answered, &command, false),
            Begin::Denied(_)
        ));
    }

    #[test]
    fn denials_are_forgotten_once_the_state_machine_would_refuse_the_id() {
        let answered = Arc::new(Answered::default());
        answered
            .decide(&reserve("old"))
            .expect("a request id")
            .deny(denial(), 600_000, 2_000);
        // sent 1_000, answered at 2_000: kept until 2_000 + retention + skew.
        let later = 2_000 + 600_000 + limits::CLOCK_SKEW_MS_MAX + 1;
        answered
            .decide(&reserve("new"))
            .expect("a request id")
            .deny(denial(), 600_000, later);
        assert_eq!(answered.denials_kept(), 1);
        assert!(matches!(
            begin(&answered, &reserve("old"), false),
            Begin::Write(Some(_))
        ));
    }

    #[test]
    fn commands_without_a_request_id_pass() {
        let answered = Arc::new(Answered::default());
        assert!(matches!(
            begin(&answered, &Command::tick(), false),
            Begin::Write(None)
        ));
        assert!(answered.decide(&Command::tick()).is_none());
    }
}
