//! Answering each Slack event once: Slack retries a delivery it thinks was
//! lost, possibly to another replica, so event ids are remembered for an
//! hour, here and (when configured) in a Redis the replicas share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::redis::Redis;

/// Remembers event ids for a while, so a retried delivery is answered once.
pub struct Dedupe {
    seen: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    capacity: usize,
    /// Shared with the other replicas, when configured.
    shared: Option<Redis>,
}

impl Dedupe {
    /// Ids are kept for `ttl`, at most `capacity` of them (oldest dropped).
    pub fn new(ttl: Duration, capacity: usize) -> Dedupe {
        Dedupe {
            seen: Mutex::new(HashMap::new()),
            ttl,
            capacity,
            shared: None,
        }
    }

    /// Remembers ids in `redis` too, so replicas share what they have seen.
    pub fn shared(mut self, redis: Redis) -> Dedupe {
        self.shared = Some(redis);
        self
    }

    /// True the first time any replica sees `id`. When the shared store
    /// cannot be reached this replica's memory decides: a retry that lands
    /// elsewhere may then be answered twice, which beats not answering.
    pub async fn first_delivery(&self, id: &str) -> bool {
        if let Some(redis) = &self.shared {
            match redis
                .set_if_absent(&format!("kbqa:slack:event:{id}"), self.ttl)
                .await
            {
                Ok(first) => {
                    // Kept locally as well, for the fallback.
                    let _ = self.first_time(id);
                    return first;
                }
                Err(e) => tracing::warn!(
                    "Slack dedupe store (Redis at {}) failed: {e}; deciding by this replica's memory",
                    redis.addr()
                ),
            }
        }
        self.first_time(id)
    }

    /// True the first time `id` is seen (within the time limit).
    pub fn first_time(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(id)
            .is_some_and(|&t| now.duration_since(t) < self.ttl)
        {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, &mut t| now.duration_since(t) < self.ttl);
            while seen.len() >= self.capacity {
                let oldest = seen.iter().min_by_key(|(_, &t)| t).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => seen.remove(&k),
                    None => break,
                };
            }
        }
        seen.insert(id.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_is_bounded_and_time_limited() {
        let d = Dedupe::new(Duration::from_secs(60), 3);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        for id in ["b", "c", "d"] {
            assert!(d.first_time(id));
        }
        assert!(d.seen.lock().unwrap().len() <= 3);
        let short = Dedupe::new(Duration::from_millis(1), 10);
        assert!(short.first_time("x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.first_time("x"));
    }
}
