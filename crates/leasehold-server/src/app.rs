//! What every front end shares: the service, the app token and rate limit
//! checked in front of both listeners, and the sidecar's own metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::auth::Token;
use crate::service::LockService;

/// The state behind both listeners.
#[derive(Debug)]
pub struct AppState {
    /// The lock service.
    pub service: Arc<LockService>,
    /// Dapr's app token (`DAPR_API_TOKEN`); `None` means no check.
    pub api_token: Option<Token>,
    /// The largest request body accepted over HTTP.
    pub max_body_bytes: usize,
    /// The request rate limit over both front ends, if any.
    pub rate: Option<Arc<RateLimit>>,
    /// Values set with daprd's `PUT /v1.0/metadata/{key}`.
    extended: Mutex<BTreeMap<String, String>>,
}

impl AppState {
    /// Shared state over a service, with at most `max_request_rate`
    /// requests a second (0: no limit).
    pub fn new(
        service: Arc<LockService>,
        api_token: Option<Token>,
        max_body_bytes: usize,
        max_request_rate: u32,
    ) -> Arc<Self> {
        Arc::new(AppState {
            service,
            api_token,
            max_body_bytes,
            rate: RateLimit::new(max_request_rate),
            extended: Mutex::default(),
        })
    }

    /// Set `key` in the extended metadata, as daprd's `SetMetadata` does.
    pub fn set_extended_metadata(&self, key: String, value: String) {
        self.extended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }

    /// The extended metadata: the values set, then `fixed` over them (daprd
    /// always reports its own runtime version), sorted by key.
    pub fn extended_metadata(&self, fixed: &HashMap<String, String>) -> BTreeMap<String, String> {
        let mut all = self
            .extended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        all.extend(fixed.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

/// A token bucket for the request rate limit, shared by both front ends.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// At most `per_second` requests a second, with bursts of as many.
    pub fn new(per_second: u32) -> Option<Arc<Self>> {
        (per_second > 0).then(|| {
            Arc::new(RateLimit {
                per_second: f64::from(per_second),
                state: Mutex::new((f64::from(per_second), Instant::now())),
            })
        })
    }

    /// The limit, per second.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }

    /// Take one token, or say no.
    pub fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.per_second)
            .min(self.per_second);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_refills() {
        let limit = RateLimit::new(5).unwrap();
        let allowed = (0..10).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 5, "a burst of the limit, then refusals");
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(limit.allow(), "refilled over time");
        assert!(RateLimit::new(0).is_none());
    }
}
