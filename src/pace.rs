//! The pacer: when the monitor may write its next batch of lines so that
//! Claude Code passes every one on (SPEC §9).
//!
//! The host joins lines printed within 200 ms into one notification, cuts a
//! notification at 3,000 UTF-16 code units, and spends one token per
//! notification from a bucket of 10 that refills one token every 2 s; a
//! notification that finds no token is dropped whole. So the monitor writes
//! each batch in one write, leaves a gap between batches, and spends from its
//! own, more cautious copy of the bucket. Pure logic with an injected clock
//! (milliseconds); the monitor loop does the I/O.

use crate::line::utf16_len;

/// The host's numbers (Claude Code 2.1.331), each overridable by an
/// environment variable in case the host changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceConfig {
    /// Host: lines within this window of a batch's first line form one notification.
    pub host_batch_window_ms: u64,
    /// Our gap between batches (must exceed the host's window).
    pub min_gap_ms: u64,
    /// Host: a notification is cut at this many UTF-16 code units.
    pub batch_units: usize,
    /// Host: token bucket size.
    pub capacity: u32,
    /// Host: one token comes back every this many ms.
    pub refill_ms: u64,
    /// Tokens we never spend, in case our clock and the host's disagree.
    pub margin_tokens: u32,
    /// We assume refills this many percent slower than the host's.
    pub refill_slack_pct: u64,
}

pub const HOST_BATCH_WINDOW_MS: u64 = 200;
pub const HOST_NOTIFICATION_UNITS: usize = 3000;
pub const HOST_LINE_UNITS: usize = 500;
pub const HOST_BUCKET_CAPACITY: u32 = 10;
pub const HOST_REFILL_MS: u64 = 2000;
pub const HOST_STREAK_KILL_MS: u64 = 30_000;
pub const HOST_STREAK_QUIET_MS: u64 = 6000;
pub const HOST_SIGKILL_GRACE_MS: u64 = 1500;

impl Default for PaceConfig {
    fn default() -> Self {
        PaceConfig {
            host_batch_window_ms: HOST_BATCH_WINDOW_MS,
            // The host's 200 ms window is a timer on its event loop, and it
            // fires late while the session is busy with a turn: two batches
            // 250 ms apart were seen merged into one notification and cut at
            // 3,000 units (real Claude Code 2.1.331, tests/claude_e2e.rs).
            // A second apart they never merged; the bucket's refill, not the
            // gap, limits throughput after the first few batches anyway.
            min_gap_ms: 1000,
            batch_units: HOST_NOTIFICATION_UNITS,
            capacity: HOST_BUCKET_CAPACITY,
            refill_ms: HOST_REFILL_MS,
            margin_tokens: 2,
            refill_slack_pct: 10,
        }
    }
}

impl PaceConfig {
    /// Defaults, with `INTER_SESSION_PACE_*` overrides (see README).
    pub fn from_env() -> Self {
        let mut c = PaceConfig::default();
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(v) = get("INTER_SESSION_PACE_GAP_MS") {
            c.min_gap_ms = v;
        }
        if let Some(v) = get("INTER_SESSION_PACE_BATCH_UNITS") {
            c.batch_units = usize::try_from(v)
                .unwrap_or(c.batch_units)
                .max(HOST_LINE_UNITS);
        }
        if let Some(v) = get("INTER_SESSION_PACE_BUCKET") {
            c.capacity = u32::try_from(v).unwrap_or(c.capacity).max(1);
        }
        if let Some(v) = get("INTER_SESSION_PACE_REFILL_MS") {
            c.refill_ms = v.max(1);
        }
        if let Some(v) = get("INTER_SESSION_PACE_MARGIN") {
            c.margin_tokens = u32::try_from(v).unwrap_or(c.margin_tokens);
        }
        c
    }

    /// Our refill period: the host's, plus slack.
    pub fn our_refill_ms(&self) -> u64 {
        self.refill_ms + self.refill_ms * self.refill_slack_pct / 100
    }

    fn usable(&self) -> u32 {
        self.capacity.saturating_sub(self.margin_tokens).max(1)
    }

    /// Batches a minute we can keep up forever.
    pub fn batches_per_minute(&self) -> f64 {
        60_000.0 / self.our_refill_ms() as f64
    }
}

/// Our copy of the host's bucket.
#[derive(Debug, Clone)]
pub struct Pacer {
    cfg: PaceConfig,
    /// Whole tokens we may spend.
    tokens: u32,
    /// When the next token comes back (only meaningful while not full).
    next_refill_ms: u64,
    last_write_ms: Option<u64>,
}

impl Pacer {
    pub fn new(cfg: PaceConfig, now_ms: u64) -> Self {
        Pacer {
            cfg,
            tokens: cfg.usable(),
            next_refill_ms: now_ms + cfg.our_refill_ms(),
            last_write_ms: None,
        }
    }

    pub fn config(&self) -> &PaceConfig {
        &self.cfg
    }

    fn refill(&mut self, now_ms: u64) {
        let period = self.cfg.our_refill_ms();
        while self.tokens < self.cfg.usable() && now_ms >= self.next_refill_ms {
            self.tokens += 1;
            self.next_refill_ms += period;
        }
        if self.tokens >= self.cfg.usable() {
            // A full bucket does not bank time.
            self.next_refill_ms = now_ms.max(self.next_refill_ms.min(now_ms + period));
        }
    }

    /// Milliseconds to wait before the next batch may be written (0: now).
    pub fn wait_ms(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        let gap_wait = self
            .last_write_ms
            .map_or(0, |t| (t + self.cfg.min_gap_ms).saturating_sub(now_ms));
        let token_wait = if self.tokens > 0 {
            0
        } else {
            self.next_refill_ms.saturating_sub(now_ms)
        };
        gap_wait.max(token_wait)
    }

    /// Record a batch written at `now_ms` (call only when `wait_ms` was 0).
    pub fn wrote(&mut self, now_ms: u64) {
        self.refill(now_ms);
        if self.tokens == self.cfg.usable() {
            self.next_refill_ms = now_ms + self.cfg.our_refill_ms();
        }
        self.tokens = self.tokens.saturating_sub(1);
        self.last_write_ms = Some(now_ms);
    }

    /// Roughly how long `batches` more batches take from now, in ms.
    pub fn drain_estimate_ms(&mut self, now_ms: u64, batches: u64) -> u64 {
        self.refill(now_ms);
        let free = u64::from(self.tokens);
        if batches <= free {
            return batches * self.cfg.min_gap_ms;
        }
        (batches - free) * self.cfg.our_refill_ms()
    }
}

/// Units a batch of lines takes once joined with newlines, as the host counts.
pub fn batch_units<S: AsRef<str>>(lines: &[S]) -> usize {
    let text: usize = lines.iter().map(|l| utf16_len(l.as_ref())).sum();
    text + lines.len().saturating_sub(1)
}

/// How many of `messages` (each a group of lines that must stay together)
/// fit in one batch of at most `max_units`, after `already` units of other
/// lines (notices). Always at least one when `already` is 0: a single
/// message is at most two lines of 500 units.
pub fn fit<S: AsRef<str>>(messages: &[Vec<S>], already: usize, max_units: usize) -> usize {
    let mut used = already;
    let mut lines = usize::from(already > 0);
    let mut n = 0;
    for m in messages {
        let add = batch_units(m) + usize::from(lines > 0);
        if used + add > max_units && (n > 0 || already > 0) {
            break;
        }
        used += add;
        lines += m.len();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of the host's bucket, as SPEC §9 measured it, to check the
    /// pacer against: it must never find the bucket empty.
    struct HostBucket {
        tokens: u32,
        last_refill: u64,
    }

    impl HostBucket {
        fn take(&mut self, now: u64) -> bool {
            while now >= self.last_refill + HOST_REFILL_MS {
                self.last_refill += HOST_REFILL_MS;
                self.tokens = (self.tokens + 1).min(HOST_BUCKET_CAPACITY);
            }
            if self.tokens == HOST_BUCKET_CAPACITY {
                self.last_refill = self.last_refill.max(now.saturating_sub(HOST_REFILL_MS - 1));
            }
            if self.tokens == 0 {
                return false;
            }
            self.tokens -= 1;
            true
        }
    }

    #[test]
    fn first_batches_go_at_once_then_gap() {
        let mut p = Pacer::new(PaceConfig::default(), 0);
        assert_eq!(p.wait_ms(0), 0);
        p.wrote(0);
        let gap = p.config().min_gap_ms;
        assert_eq!(p.wait_ms(0), gap);
        assert_eq!(p.wait_ms(100), gap - 100);
        assert_eq!(p.wait_ms(gap), 0);
    }

    #[test]
    fn never_outruns_the_host_bucket() {
        // Greedy writer for 10 minutes of simulated time.
        let mut p = Pacer::new(PaceConfig::default(), 0);
        let mut host = HostBucket {
            tokens: HOST_BUCKET_CAPACITY,
            last_refill: 0,
        };
        let mut now = 0;
        let mut writes = 0;
        while now < 600_000 {
            let w = p.wait_ms(now);
            if w == 0 {
                assert!(
                    host.take(now),
                    "host bucket empty at {now} ms after {writes} writes"
                );
                p.wrote(now);
                writes += 1;
            } else {
                now += w;
            }
        }
        // Close to the host's sustained rate (one every 2 s), with slack.
        assert!(writes > 260 && writes < 300, "{writes}");
    }

    #[test]
    fn gaps_exceed_host_window() {
        let cfg = PaceConfig::default();
        assert!(cfg.min_gap_ms > cfg.host_batch_window_ms);
        let mut p = Pacer::new(cfg, 1000);
        let mut last = None;
        let mut now = 1000;
        for _ in 0..50 {
            now += p.wait_ms(now);
            if let Some(l) = last {
                assert!(now - l >= cfg.min_gap_ms);
            }
            p.wrote(now);
            last = Some(now);
        }
    }

    #[test]
    fn idle_refills_to_usable_only() {
        // Gaps short enough that the bucket, not the gap, is what binds.
        let cfg = PaceConfig {
            min_gap_ms: 250,
            ..PaceConfig::default()
        };
        let mut p = Pacer::new(cfg, 0);
        let gap = cfg.min_gap_ms;
        for i in 0..8 {
            let t = i * gap;
            assert_eq!(p.wait_ms(t), 0, "write {i}");
            p.wrote(t);
        }
        assert!(p.wait_ms(8 * gap) > 0, "ninth write must wait for a refill");
        // After a long idle spell, the bucket is full (8 usable), not more.
        let mut n = 0;
        let mut now = 1_000_000;
        while p.wait_ms(now) == 0 {
            p.wrote(now);
            n += 1;
            now += gap;
        }
        assert_eq!(n, 8);
    }

    #[test]
    fn fitting_messages_into_batches() {
        let short = vec!["x".repeat(99)];
        let msgs = vec![short.clone(); 100];
        // 100 units each incl. newline: 30 fit in 3,000 (29 newlines: 2,999).
        assert_eq!(fit(&msgs, 0, 3000), 30);
        let long = vec!["y".repeat(500), "z".repeat(100)];
        assert_eq!(
            fit(
                &[
                    long.clone(),
                    long.clone(),
                    long.clone(),
                    long.clone(),
                    long.clone()
                ],
                0,
                3000
            ),
            4
        );
        // Never zero on an empty batch even if one message is huge.
        assert_eq!(fit(&[vec!["w".repeat(5000)]], 0, 3000), 1);
        // With a notice already in, a message that does not fit waits.
        assert_eq!(fit(&[vec!["w".repeat(2990)]], 100, 3000), 0);
        assert_eq!(batch_units(&["ab", "😀"]), 2 + 1 + 2);
    }

    #[test]
    fn env_override() {
        std::env::set_var("INTER_SESSION_PACE_GAP_MS", "400");
        let c = PaceConfig::from_env();
        std::env::remove_var("INTER_SESSION_PACE_GAP_MS");
        assert_eq!(c.min_gap_ms, 400);
    }
}
