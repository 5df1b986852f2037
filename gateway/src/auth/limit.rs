//! Rate limits per key: a token bucket each, refilled at a steady rate up to a burst; a request
//! that finds its bucket empty is told how long to wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long an idle key's bucket is kept (a returning key starts full again).
const IDLE_BUCKET_TTL: Duration = Duration::from_secs(600);

/// A rate: requests per second, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second; zero turns limiting off.
    pub per_second: f64,
    /// The most requests at once.
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One token bucket per key.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: Rate,
    buckets: moka::sync::Cache<Uuid, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    /// Limits every key to `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: moka::sync::Cache::builder()
                .time_to_idle(IDLE_BUCKET_TTL)
                .build(),
        }
    }

    /// Takes a token for `key`; when none is left, returns how long until one is.
    pub fn take(&self, key: Uuid) -> Result<(), Duration> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.rate.burst.max(1));
        let bucket = self.buckets.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }))
        });
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.rate.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_key() {
        let limiter = RateLimiter::new(Rate {
            per_second: 10.0,
            burst: 3,
        });
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for _ in 0..3 {
            assert!(limiter.take(a).is_ok());
        }
        let wait = limiter.take(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(limiter.take(b).is_ok(), "each key has its own bucket");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.take(a).is_ok(), "tokens come back at the rate");
    }

    #[test]
    fn a_zero_rate_never_limits() {
        let limiter = RateLimiter::new(Rate {
            per_second: 0.0,
            burst: 0,
        });
        let key = Uuid::now_v7();
        assert!((0..1000).all(|_| limiter.take(key).is_ok()));
    }
}
