//! What a checker concludes: shared by the checkers of `check` and the exact search of `wgl`.

use serde::Serialize;

/// Evidence lines kept per checker.
pub const EVIDENCE_MAX: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub valid: bool,
    /// Things checked (operations, nodes, request ids).
    pub checked: u64,
    /// Things that could not be decided (e.g. a read whose window is too wide).
    pub unchecked: u64,
    pub violation_count: u64,
    /// The first violations, each with its evidence.
    pub violations: Vec<String>,
    /// What the checker could not decide, and why (e.g. a root the exact search left unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Verdict {
    pub(crate) fn new(checker: &'static str) -> Verdict {
        Verdict {
            checker,
            valid: true,
            checked: 0,
            unchecked: 0,
            violation_count: 0,
            violations: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn violation(&mut self, evidence: String) {
        self.valid = false;
        self.violation_count += 1;
        if self.violations.len() < EVIDENCE_MAX {
            self.violations.push(evidence);
        }
    }
}
