//! Per-address throttling of password checks (`POST /api/v1/users/token/`), as OpenWISP
//! throttles its token endpoint: guessing passwords is slow, and so is argon2 on purpose.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ApiError;

/// A fixed-window counter per client address.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// At most `limit` attempts per `window` from one address.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `addr`; refuses it past the limit.
    pub fn check(&self, addr: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            // Forget finished windows so spoofed sources cannot grow the map without bound.
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = seen.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let wait = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(ApiError::Throttled(wait.as_secs().max(1)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_its_limit_while_others_go_on() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(throttle.check(a).is_ok());
        assert!(throttle.check(a).is_ok());
        assert!(matches!(throttle.check(a), Err(ApiError::Throttled(_))));
        assert!(throttle.check(b).is_ok());
    }
}
