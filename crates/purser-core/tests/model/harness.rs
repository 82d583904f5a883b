//! Runs a scenario on the real state machine and on the reference model side by side and
//! checks, after every command, that they agree and that the invariants hold.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use purser_core::{Applied, Command, Error, Event, Outcome, State};

use super::gen::{Builder, Scenario};
use super::reference::{MApplied, MErr, Model};

pub struct Run {
    pub real: State,
    pub model: Model,
    pub builder: Builder,
    /// Every applied command with its timestamp, for failure reports.
    pub log: Vec<(u64, Command, String)>,
    /// I4: time of the last non-duplicate success per request id.
    pub applied_at: BTreeMap<String, u64>,
    pub steps_since_sweep: usize,
    /// Coverage counters (printed with `PURSER_MODEL_STATS=1`).
    pub coverage: BTreeMap<String, usize>,
}

pub type Failure = String;

fn events_of_interest(events: &[Event]) -> Vec<Event> {
    events.to_vec()
}

impl Run {
    pub fn new() -> Self {
        Run {
            real: State::new(),
            model: Model::new(),
            builder: Builder::new(),
            log: Vec::new(),
            applied_at: BTreeMap::new(),
            steps_since_sweep: 0,
            coverage: BTreeMap::new(),
        }
    }

    pub fn report(&self, msg: &str) -> Failure {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{msg}\n--- command log ({} commands) ---",
            self.log.len()
        );
        for (i, (at, c, res)) in self.log.iter().enumerate() {
            let req = match &c.request {
                None => "tick".to_owned(),
                Some(r) if r.sent_at_ms == *at => r.id.clone(),
                Some(r) => format!("{} sent {}", r.id, r.sent_at_ms),
            };
            let _ = writeln!(s, "#{i} at {at} [{req}] {:?}\n      => {res}", c.op);
        }
        s
    }

    /// Applies one command to both and compares. Returns the real result.
    pub fn step(&mut self, at: u64, cmd: Command) -> Result<Result<Applied, Error>, Failure> {
        let real = self.real.apply(at, cmd.clone());
        let short = match &real {
            Err(e) => format!("{:?}: {}", e.kind, e.message),
            Ok(a) => format!("{:?}", a.outcome),
        };
        self.log.push((at, cmd.clone(), short));
        if let Ok(a) = &real {
            self.cover(&a.outcome, &a.events);
        }
        let model = self.model.apply(at, &cmd);
        self.compare(&cmd, &real, &model)?;
        if self.real.now_ms() != self.model.now {
            return Err(self.report(&format!(
                "clock: real {} model {}",
                self.real.now_ms(),
                self.model.now
            )));
        }
        if let Err(e) = self.real.check_invariants() {
            return Err(self.report(&format!("check_invariants: {e}")));
        }
        // I4: a request (id and payload) takes effect at most once.
        if let (Ok(a), Some(r)) = (&real, &cmd.request) {
            if !matches!(a.outcome, Outcome::Duplicate(_) | Outcome::Denied(_)) {
                let key = format!("{}\u{0}{:?}", r.id, cmd.op);
                if let Some(prev) = self.applied_at.insert(key, self.real.now_ms()) {
                    return Err(self.report(&format!(
                        "I4: request {} (same payload) applied twice, first at {prev}",
                        r.id
                    )));
                }
            }
        }
        let touched = match &model {
            Ok(m) => m.touched.clone(),
            Err(_) => vec![],
        };
        self.steps_since_sweep += 1;
        if self.steps_since_sweep >= 12 {
            self.steps_since_sweep = 0;
            self.sweep()?;
        } else {
            let mut nodes: Vec<u64> = Vec::new();
            for n in touched {
                for p in self.model.path_ids(n) {
                    if !nodes.contains(&p) {
                        nodes.push(p);
                    }
                }
            }
            for n in nodes {
                self.check_node(n)?;
            }
            if let Ok(Applied {
                outcome: Outcome::Reserved(r),
                ..
            }) = &real
            {
                self.check_hold(r.reservation_id)?;
            }
        }
        Ok(real)
    }

    fn compare(
        &self,
        cmd: &Command,
        real: &Result<Applied, Error>,
        model: &Result<MApplied, MErr>,
    ) -> Result<(), Failure> {
        match (real, model) {
            (Err(r), Err(m)) => {
                if r.kind != m.kind {
                    return Err(self.report(&format!(
                        "error kinds differ for {cmd:?}\n real: {r:?}\n model: {:?} ({})",
                        m.kind, m.msg
                    )));
                }
            }
            (Ok(r), Ok(m)) => {
                if r.outcome != m.applied.outcome {
                    return Err(self.report(&format!(
                        "outcomes differ for {cmd:?}\n real:  {:?}\n model: {:?}",
                        r.outcome, m.applied.outcome
                    )));
                }
                let re = events_of_interest(&r.events);
                let me = events_of_interest(&m.applied.events);
                if re != me {
                    let mut s = format!("events differ for {cmd:?}\n real:\n");
                    for e in &re {
                        let _ = writeln!(s, "   {e:?}");
                    }
                    s.push_str(" model:\n");
                    for e in &me {
                        let _ = writeln!(s, "   {e:?}");
                    }
                    return Err(self.report(&s));
                }
            }
            (Ok(r), Err(m)) => {
                return Err(self.report(&format!(
                    "real succeeded, model failed for {cmd:?}\n real: {:?}\n model: {:?} ({})",
                    r.outcome, m.kind, m.msg
                )))
            }
            (Err(r), Ok(m)) => {
                return Err(self.report(&format!(
                    "real failed, model succeeded for {cmd:?}\n real: {r:?}\n model: {:?}",
                    m.applied.outcome
                )))
            }
        }
        Ok(())
    }

    fn check_node(&mut self, id: u64) -> Result<(), Failure> {
        let now = self.real.now_ms();
        let real = self
            .real
            .node_view(id, now)
            .map_err(|e| self.report(&format!("node_view({id}) failed: {e:?}")))?;
        let model = self.model.node_view(id);
        if real != model {
            return Err(self.report(&format!(
                "node view {id} differs\n real:  {real:?}\n model: {model:?}"
            )));
        }
        let usage = self
            .real
            .usage(id, now)
            .map_err(|e| self.report(&format!("usage({id}) failed: {e:?}")))?;
        if usage != model.limits {
            return Err(self.report(&format!(
                "usage {id} differs\n real:  {usage:?}\n model: {:?}",
                model.limits
            )));
        }
        let grants = self
            .real
            .grants_of(id)
            .map_err(|e| self.report(&format!("grants_of({id}) failed: {e:?}")))?;
        if grants != model.grants {
            return Err(self.report(&format!(
                "grants_of {id} differs\n real:  {grants:?}\n model: {:?}",
                model.grants
            )));
        }
        if self.real.resolve_path(&model.path).ok() != Some(id) {
            return Err(self.report(&format!("resolve_path({}) is not {id}", model.path)));
        }
        // I1.
        self.model.refresh_exemptions(id);
        let bad = self.model.unexplained_i1(id);
        if !bad.is_empty() {
            return Err(self.report(&format!("I1 violated: {bad:?}")));
        }
        Ok(())
    }

    fn check_hold(&self, rid: u64) -> Result<(), Failure> {
        let real = self.real.hold(rid);
        let model = self.model.hold_view(rid);
        if real != model {
            return Err(self.report(&format!(
                "hold {rid} differs\n real:  {real:?}\n model: {model:?}"
            )));
        }
        Ok(())
    }

    /// Every node, hold and grant, and the conservation law (I3).
    pub fn sweep(&mut self) -> Result<(), Failure> {
        for id in 1..=self.model.nodes.len() as u64 {
            self.check_node(id)?;
        }
        if self.real.node_count() != self.model.nodes.len() as u64 {
            return Err(self.report("node_count differs"));
        }
        if self.real.open_holds() != self.model.holds.len() as u64 {
            return Err(self.report(&format!(
                "open_holds: real {} model {}",
                self.real.open_holds(),
                self.model.holds.len()
            )));
        }
        for rid in 1..self.model.next_res + 1 {
            self.check_hold(rid)?;
        }
        for gid in 1..=self.model.grants.len() as u64 + 1 {
            let real = self.real.grant(gid);
            let model = self.model.live_grant(gid);
            if real != model {
                return Err(self.report(&format!(
                    "grant {gid} differs\n real:  {real:?}\n model: {model:?}"
                )));
            }
        }
        for id in 1..=self.model.nodes.len() as u64 {
            let real = self
                .real
                .holds_of(id)
                .map_err(|e| self.report(&format!("{e:?}")))?;
            let model: Vec<_> = {
                let mut ids: Vec<u64> = self
                    .model
                    .holds
                    .iter()
                    .filter(|h| h.node == id)
                    .map(|h| h.id)
                    .collect();
                ids.sort_unstable();
                ids.into_iter()
                    .filter_map(|h| self.model.hold_view(h))
                    .collect()
            };
            if real != model {
                return Err(self.report(&format!(
                    "holds_of {id} differs\n real:  {real:?}\n model: {model:?}"
                )));
            }
        }
        // I3: conservation per (root, currency), measured on the real state.
        let now = self.real.now_ms();
        for ((root, cur), l) in &self.model.ledger {
            let mut remaining = 0u64;
            for g in &self.model.grants {
                if g.currency == *cur && self.model.root_of(g.node) == *root {
                    remaining += self.real.grant(g.id).map_or(0, |v| v.remaining);
                }
            }
            let expected = l.credited - l.forfeited - l.paid_settle - l.paid_debt;
            if remaining != expected {
                return Err(self.report(&format!(
                    "I3: {root}/{cur}: grants hold {remaining}, expected credited {} - forfeited {} - paid {} - debt paid {} = {expected}",
                    l.credited, l.forfeited, l.paid_settle, l.paid_debt
                )));
            }
            let mut debt = 0u64;
            for n in self.model.subtree(*root) {
                let v = self
                    .real
                    .node_view(n, now)
                    .map_err(|e| self.report(&format!("{e:?}")))?;
                debt += v
                    .accounts
                    .iter()
                    .filter(|a| a.currency == *cur)
                    .map(|a| a.debt)
                    .sum::<u64>();
            }
            if debt != l.debt_created - l.paid_debt {
                return Err(self.report(&format!(
                    "I3: {root}/{cur}: debt {debt}, expected created {} - paid {}",
                    l.debt_created, l.paid_debt
                )));
            }
        }
        // I3 second half: a node's spent_total is the settles booked on it or below while it
        // was there (checked in the node views against the model's records); and the model's
        // funded settles equal what the grants paid plus the debt created.
        Ok(())
    }

    /// Runs a whole scenario.
    pub fn run(&mut self, sc: &Scenario) -> Result<(), Failure> {
        let mut now = sc.base;
        for step in &sc.steps {
            let at = self.builder.time(now.max(self.model.now), &step.dt);
            let Some(cmd) = self.builder.build(&self.model, at, step) else {
                continue;
            };
            let _ = self.step(at, cmd)?;
            now = now.max(self.model.now);
        }
        self.sweep()?;
        if std::env::var_os("PURSER_MODEL_STATS").is_some() {
            self.print_stats();
        }
        Ok(())
    }

    fn cover(&mut self, outcome: &Outcome, events: &[Event]) {
        let mut keys: Vec<String> = Vec::new();
        match outcome {
            Outcome::Denied(d) => {
                let w = d.window.map_or("-".to_owned(), |w| {
                    format!("{w:?}")
                        .split([' ', '(', '{'])
                        .next()
                        .unwrap_or("")
                        .to_owned()
                });
                let rule = format!("{:?}", d.rule);
                let rule = rule.split([' ', '{']).next().unwrap_or("");
                keys.push(format!(
                    "deny {rule} {w} retry={}",
                    d.retry_after_ms.is_some()
                ));
                if rule == "RoleCap" && self.model.exists(d.node) {
                    let root = self.model.root_of(d.node);
                    keys.push(format!(
                        "deny RoleCap {:?}",
                        self.model.node(root).resolution
                    ));
                }
            }
            Outcome::Settled(s) | Outcome::Charged(s) => {
                keys.push(format!(
                    "settle late={} overrun={} debt={} parts={}",
                    s.late,
                    s.overrun > 0,
                    s.debt > 0,
                    s.plan.len()
                ));
            }
            Outcome::Reserved(r) => {
                keys.push(format!("reserved parts={}", r.plan.len().min(3)));
            }
            Outcome::Ticked {
                holds_expired,
                grants_expired,
                grants_renewed,
            } => {
                keys.push(format!(
                    "tick holds={} expired={} renewed={}",
                    (*holds_expired).min(2),
                    (*grants_expired).min(2),
                    (*grants_renewed).min(3)
                ));
            }
            _ => {}
        }
        for e in events {
            if let Event::Governance(g) = e {
                let name = format!("{g:?}");
                let name = name.split([' ', '{']).next().unwrap_or("").to_owned();
                let detail = match g {
                    purser_core::GovernanceEvent::ThresholdCrossed { role, window, .. }
                    | purser_core::GovernanceEvent::SoftLimitExceeded { role, window, .. } => {
                        format!(
                            " role={} {}",
                            role.is_some(),
                            format!("{window:?}")
                                .split([' ', '(', '{'])
                                .next()
                                .unwrap_or("")
                        )
                    }
                    purser_core::GovernanceEvent::WindowReset {
                        from_roles, window, ..
                    } => {
                        format!(
                            " roles={from_roles} {}",
                            format!("{window:?}")
                                .split([' ', '(', '{'])
                                .next()
                                .unwrap_or("")
                        )
                    }
                    purser_core::GovernanceEvent::Paused { by_limit, .. } => {
                        format!(" by_limit={by_limit}")
                    }
                    purser_core::GovernanceEvent::GrantRenewed {
                        carried, forfeited, ..
                    } => {
                        format!(" carried={} forfeited={}", *carried > 0, *forfeited > 0)
                    }
                    _ => String::new(),
                };
                keys.push(format!("event {name}{detail}"));
            }
        }
        for k in keys {
            *self.coverage.entry(k).or_default() += 1;
        }
    }

    /// Opt-in (`PURSER_MODEL_STATS=1`): what the scenario exercised, one line per run.
    fn print_stats(&self) {
        let mut hist: BTreeMap<String, usize> = BTreeMap::new();
        for (_, c, res) in &self.log {
            let op = format!("{:?}", c.op);
            let op = op.split([' ', '(', '{']).next().unwrap_or("").to_owned();
            let res = if let Some(i) = res.find("rule: ") {
                let r = &res[i + 6..];
                format!("Denied:{}", r.split([',', ' ', '{']).next().unwrap_or(""))
            } else {
                res.split([' ', '(', '{', ':'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            };
            *hist.entry(format!("{op}->{res}")).or_default() += 1;
        }
        eprintln!(
            "STATS cmds={} nodes={} {:?}",
            self.log.len(),
            self.model.nodes.len(),
            hist
        );
        eprintln!("COVER {:?}", self.coverage);
    }
}
