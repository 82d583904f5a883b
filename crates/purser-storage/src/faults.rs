//! Test-only fault hooks, compiled in only with the `fault-hooks` feature (`cargo build
//! --release -p purser-cli --features fault-hooks`) for the chaos harness (`jepsen/`). Without
//! the feature none of this exists and openraft runs on its own tokio runtime.
//!
//! A control file named by `PURSER_FAULTS_FILE` is read every [`POLL_EVERY`]; each line is
//! `key = value` (`#` starts a comment, a missing file means no faults):
//!
//! - `clock_rate = 1.5`: openraft's monotonic clock runs at this rate relative to real time
//!   (0.1 ..= 10). Its timers (heartbeats, election timeouts) and its leases are measured on it,
//!   so a member with rate 2 believes a second has passed after half a real second.
//! - `delay_ms = 5-40`: each outgoing Raft RPC waits a random time in this range first (at
//!   most 10 s).
//! - `duplicate_percent = 10`: this share of outgoing Raft RPCs (not snapshots) is sent a second
//!   time, later, and the second answer is dropped.
//!
//! A file that does not parse is ignored as a whole (the previous settings stay), so that a
//! half-written file cannot produce a fault nobody asked for.

use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// Environment variable naming the control file.
pub const FAULTS_FILE_ENV: &str = "PURSER_FAULTS_FILE";
/// How often the control file is read.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// Bounds on what the file may ask for: a typo must not stop the clock or the network.
pub const CLOCK_RATE_MIN: f64 = 0.1;
pub const CLOCK_RATE_MAX: f64 = 10.0;
pub const DELAY_MS_MAX: u64 = 10_000;
/// Longest control file read (anything longer is not a control file).
const FILE_BYTES_MAX: u64 = 4096;

/// The faults in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub clock_rate: f64,
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    pub duplicate_percent: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            clock_rate: 1.0,
            delay_min_ms: 0,
            delay_max_ms: 0,
            duplicate_percent: 0,
        }
    }
}

impl Settings {
    /// Parses a control file's text.
    pub fn parse(text: &str) -> Result<Settings, String> {
        let mut s = Settings::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("not `key = value`: {line:?}"))?;
            let bad = |what: &str| format!("{key}: {what} (got {value:?})");
            match key {
                "clock_rate" => {
                    let rate: f64 = value.parse().map_err(|_| bad("not a number"))?;
                    if !(CLOCK_RATE_MIN..=CLOCK_RATE_MAX).contains(&rate) {
                        return Err(bad("outside 0.1 ..= 10"));
                    }
                    s.clock_rate = rate;
                }
                "delay_ms" => {
                    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
                    let lo: u64 = lo.trim().parse().map_err(|_| bad("not MIN-MAX"))?;
                    let hi: u64 = hi.trim().parse().map_err(|_| bad("not MIN-MAX"))?;
                    if lo > hi || hi > DELAY_MS_MAX {
                        return Err(bad("needs MIN <= MAX <= 10000"));
                    }
                    s.delay_min_ms = lo;
                    s.delay_max_ms = hi;
                }
                "duplicate_percent" => {
                    let p: u32 = value.parse().map_err(|_| bad("not an integer"))?;
                    if p > 100 {
                        return Err(bad("above 100"));
                    }
                    s.duplicate_percent = p;
                }
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        Ok(s)
    }
}

static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);

/// The settings in force (the control file is polled from the first call on).
pub fn settings() -> Settings {
    start_polling();
    SETTINGS
        .lock()
        .map(|s| s.unwrap_or_default())
        .unwrap_or_default()
}

fn start_polling() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let Some(path) = std::env::var_os(FAULTS_FILE_ENV) else {
            return;
        };
        tracing::warn!(file = ?path, "fault hooks armed: polling the control file");
        let spawned = std::thread::Builder::new()
            .name("purser-faults".into())
            .spawn(move || poll(std::path::PathBuf::from(path)));
        if let Err(e) = spawned {
            tracing::error!("fault hooks: cannot start the poller: {e}");
        }
    });
}

fn poll(path: std::path::PathBuf) {
    use std::io::Read;
    let mut last_text: Option<String> = None;
    loop {
        let mut text = String::new();
        // A missing or unreadable file means no faults.
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = file.take(FILE_BYTES_MAX).read_to_string(&mut text);
        }
        if last_text.as_deref() != Some(text.as_str()) {
            match Settings::parse(&text) {
                Ok(settings) => apply(settings),
                Err(e) => tracing::warn!("fault hooks: control file ignored: {e}"),
            }
            last_text = Some(text);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn apply(settings: Settings) {
    let Ok(mut current) = SETTINGS.lock() else {
        return;
    };
    if current.unwrap_or_default() != settings {
        tracing::warn!(?settings, "fault hooks: new settings");
    }
    *current = Some(settings);
    drop(current);
    set_clock_rate(settings.clock_rate);
}

/// openraft's clock: virtual time that advances at `rate` times real monotonic time, piecewise
/// linear so that a rate change neither jumps nor reverses it.
struct Clock {
    origin: std::time::Instant,
    /// Real time since `origin` and virtual time at the last rate change.
    real_anchor: Duration,
    virtual_anchor: Duration,
    rate: f64,
}

/// Virtual time starts this far from zero so that openraft's `now - lease` never underflows.
const VIRTUAL_START: Duration = Duration::from_secs(1_000_000);

static CLOCK: Mutex<Option<Clock>> = Mutex::new(None);

fn with_clock<T>(f: impl FnOnce(&mut Clock, Duration) -> T) -> T {
    let mut guard = CLOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let clock = guard.get_or_insert_with(|| Clock {
        origin: std::time::Instant::now(),
        real_anchor: Duration::ZERO,
        virtual_anchor: VIRTUAL_START,
        rate: 1.0,
    });
    // Read inside the lock: two callers never see virtual time go backwards.
    let real = clock.origin.elapsed();
    f(clock, real)
}

impl Clock {
    fn virtual_at(&self, real: Duration) -> Duration {
        self.virtual_anchor + real.saturating_sub(self.real_anchor).mul_f64(self.rate)
    }
}

fn set_clock_rate(rate: f64) {
    with_clock(|clock, real| {
        if clock.rate != rate {
            clock.virtual_anchor = clock.virtual_at(real);
            clock.real_anchor = real;
            clock.rate = rate;
        }
    });
}

fn clock_rate() -> f64 {
    with_clock(|clock, _| clock.rate)
}

/// The real time a virtual `duration` takes at the current rate.
fn to_real(duration: Duration) -> Duration {
    duration.div_f64(clock_rate())
}

/// An instant on openraft's (possibly skewed) clock: virtual time since this process's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkewedInstant(Duration);

impl openraft::Instant for SkewedInstant {
    fn now() -> Self {
        start_polling();
        SkewedInstant(with_clock(|clock, real| clock.virtual_at(real)))
    }
}

impl Add<Duration> for SkewedInstant {
    type Output = SkewedInstant;
    fn add(self, rhs: Duration) -> SkewedInstant {
        SkewedInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for SkewedInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for SkewedInstant {
    type Output = SkewedInstant;
    fn sub(self, rhs: Duration) -> SkewedInstant {
        SkewedInstant(self.0.saturating_sub(rhs))
    }
}

impl SubAssign<Duration> for SkewedInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 = self.0.saturating_sub(rhs);
    }
}

impl Sub<SkewedInstant> for SkewedInstant {
    type Output = Duration;
    fn sub(self, rhs: SkewedInstant) -> Duration {
        self.0.saturating_sub(rhs.0)
    }
}

/// openraft's tokio runtime with time read from [`SkewedInstant`]: sleeps and timeouts of a
/// virtual duration last that duration divided by the rate in force when they start.
#[derive(Debug)]
pub struct SkewedRuntime(TokioRuntime);

type Tokio = TokioRuntime;

impl AsyncRuntime for SkewedRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = SkewedInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(to_real(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        let now = <SkewedInstant as openraft::Instant>::now();
        tokio::time::sleep(to_real(deadline - now))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(to_real(duration), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        let now = <SkewedInstant as openraft::Instant>::now();
        tokio::time::timeout(to_real(deadline - now), future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    type Mpsc = <Tokio as AsyncRuntime>::Mpsc;
    type Watch = <Tokio as AsyncRuntime>::Watch;
    type Oneshot = <Tokio as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        SkewedRuntime(Tokio::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_files_parse_within_bounds() {
        let s = Settings::parse(
            "# a comment\nclock_rate = 1.5\ndelay_ms = 5-40\nduplicate_percent = 10\n",
        )
        .expect("parses");
        assert_eq!(
            s,
            Settings {
                clock_rate: 1.5,
                delay_min_ms: 5,
                delay_max_ms: 40,
                duplicate_percent: 10
            }
        );
        assert_eq!(Settings::parse("").expect("empty"), Settings::default());
        assert_eq!(
            Settings::parse("delay_ms = 7").expect("one").delay_max_ms,
            7
        );
        for bad in [
            "clock_rate = 0",
            "clock_rate = 11",
            "clock_rate = fast",
            "delay_ms = 40-5",
            "delay_ms = 0-10001",
            "duplicate_percent = 101",
            "speed = 2",
            "clock_rate",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn a_rate_change_neither_jumps_nor_reverses_the_clock() {
        let clock = Clock {
            origin: std::time::Instant::now(),
            real_anchor: Duration::ZERO,
            virtual_anchor: VIRTUAL_START,
            rate: 2.0,
        };
        let at = |c: &Clock, ms: u64| c.virtual_at(Duration::from_millis(ms));
        assert_eq!(at(&clock, 1_000) - VIRTUAL_START, Duration::from_secs(2));
        let before = at(&clock, 1_000);
        let slowed = Clock {
            real_anchor: Duration::from_millis(1_000),
            virtual_anchor: before,
            rate: 0.5,
            ..clock
        };
        assert_eq!(at(&slowed, 1_000), before);
        assert_eq!(at(&slowed, 3_000) - before, Duration::from_secs(1));
        let t = SkewedInstant(Duration::from_secs(1));
        assert_eq!(t - Duration::from_secs(5), SkewedInstant(Duration::ZERO));
        assert_eq!(t - SkewedInstant(Duration::from_secs(3)), Duration::ZERO);
    }
}
