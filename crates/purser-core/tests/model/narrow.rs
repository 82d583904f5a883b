//! Opt-in narrowing of the generator, for bisecting a failure: `PURSER_MODEL_NARROW=
//! hourly-recur,year-window`. The default is strict: nothing is narrowed. Each switch names a
//! discrepancy the model once found (all fixed since).
//!
//! - `retention-raise`: the generator never raises `request_retention_ms` (raising it lets
//!   a retry whose record was kept for the old retention apply a second time: I4).
//! - `hourly-recur`: the generator does not send grants with `recur: Hour` (accepted by the
//!   implementation, refused by the rulebook).
//! - `year-window`: the generator does not send limits with a `Calendar(Year)` window
//!   (accepted by the implementation, not a window of the rulebook).

pub fn narrowed(what: &str) -> bool {
    static SET: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        std::env::var("PURSER_MODEL_NARROW")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|s| s == what)
}
