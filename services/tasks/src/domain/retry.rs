//! Retry timing: exponential backoff with jitter between attempts of a failed task.

use std::time::Duration;

/// How long a failed task waits before it may be claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failed attempt, before jitter.
    pub base: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Returns the delay after `attempts` failed attempts: `base * 2^(attempts-1)`, capped at
    /// `max`, then scaled by a random factor in [0.5, 1.0) so that retries of many tasks that
    /// failed together spread out ("equal jitter").
    pub fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let backoff = self.base.saturating_mul(1 << exponent).min(self.max);
        backoff.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_then_caps_with_jitter_within_bounds() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (attempts, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            for _ in 0..50 {
                let delay = policy.delay(attempts).as_millis();
                assert!(
                    delay >= full / 2 && delay < full,
                    "attempt {attempts}: {delay} ms outside [{}, {full})",
                    full / 2
                );
            }
        }
    }
}
