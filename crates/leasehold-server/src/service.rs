//! The lock service: everything that does not depend on the transport.
//!
//! Both front ends decode their wire format into calls on [`LockService`]
//! and map its answers back. Validation runs in daprd's order
//! (`pkg/api/universal/lock.go`), so a Dapr client gets the same error for
//! the same mistake from either transport and from either sidecar.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::manifest::Component;
use leasehold_core::{Acquire, Capabilities, LockStore, Release, StoreError};
use leasehold_stores::StoreContext;

use crate::error::{ApiError, ErrorKind};
use crate::extended::{HoldClock, HoldRegistry};
use crate::metrics::{Metrics, StoreOp};
use crate::scope::KeyScope;
use crate::trace::Tracer;
use crate::waiters::WaitQueues;

/// Bounds on what a request may ask for. Each refusal names the field and
/// the limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest resource id, in bytes.
    pub max_resource_id_bytes: usize,
    /// Longest lock owner, in bytes.
    pub max_owner_bytes: usize,
    /// Longest lease a client may ask for; a component may set a lower one
    /// with `maxLeaseSeconds`.
    pub max_lease: Duration,
    /// How long a store call may take before the request fails.
    pub store_timeout: Duration,
    /// Longest total time one grant may be held through renewals; a
    /// component may set a lower one with `maxHoldSeconds`.
    pub max_hold: Duration,
    /// Longest wait a client may ask for.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_resource_id_bytes: 1024,
            max_owner_bytes: 256,
            max_lease: Duration::from_secs(24 * 3600),
            store_timeout: Duration::from_secs(10),
            max_hold: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(3600),
        }
    }
}

/// One configured store and what the service needs to know about it.
#[derive(Debug)]
pub struct StoreHandle {
    /// `metadata.name`.
    pub name: String,
    /// The same, shared with the wait queues and hold records.
    pub name_arc: Arc<str>,
    /// `spec.type`, lower-cased.
    pub type_name: String,
    /// `spec.version` (shown as `v1` when empty).
    pub version: String,
    /// The store itself.
    pub store: Arc<dyn LockStore>,
    /// How resource ids become keys.
    pub scope: KeyScope,
    /// The longest lease this store grants.
    pub max_lease: Duration,
    /// The longest total hold through renewals.
    pub max_hold: Duration,
    /// What the store declared it can do.
    pub capabilities: Capabilities,
    /// Whether the backend answered lately, and the last failure.
    pub health: std::sync::Mutex<StoreHealth>,
    /// A copy of `health.reachable`, read without the lock on every call.
    pub reachable: std::sync::atomic::AtomicBool,
}

/// The truth about one store's backend, as last seen.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth {
    /// Whether the last call or check reached the backend.
    pub reachable: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<std::time::SystemTime>,
    /// When the backend was last seen, by a call or a check.
    pub checked_at: Option<std::time::SystemTime>,
}

impl StoreHandle {
    /// Record the result of a store call. Failures of the backend count; a
    /// store that only refuses (recovering, unsupported) is still reachable.
    pub fn record_health(&self, result: Result<(), &StoreError>) {
        self.record(result, false);
    }

    /// Record a periodic health check: the same, and always stamped.
    pub fn record_check(&self, result: Result<(), &StoreError>) {
        self.record(result, true);
    }

    fn record(&self, result: Result<(), &StoreError>, stamp: bool) {
        use leasehold_core::StoreErrorKind as K;
        use std::sync::atomic::Ordering;
        let failure = result
            .err()
            .filter(|err| matches!(err.kind(), K::Unavailable | K::Timeout | K::Backend));
        if failure.is_none() && !stamp && self.reachable.load(Ordering::Relaxed) {
            // The common case on the request path: nothing changed, no lock taken.
            return;
        }
        self.reachable.store(failure.is_none(), Ordering::Relaxed);
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::SystemTime::now();
        health.checked_at = Some(now);
        health.reachable = failure.is_none();
        if let Some(err) = failure {
            health.last_error = Some(err.to_string());
            health.last_error_at = Some(now);
        }
    }

    /// A copy of the current health.
    pub fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The protocol-independent lock service.
#[derive(Debug)]
pub struct LockService {
    app_id: String,
    stores: HashMap<String, Arc<StoreHandle>>,
    limits: Limits,
    pub(crate) waiters: Arc<WaitQueues>,
    pub(crate) holds: HoldRegistry,
    pub(crate) hold_clock: HoldClock,
    metrics: Arc<Metrics>,
    tracer: Tracer,
}

/// A component that passed validation, ready to open.
#[derive(Debug)]
pub struct ValidatedStore {
    component: Component,
    scope: KeyScope,
    max_lease: Duration,
    max_hold: Duration,
    config: leasehold_stores::StoreConfig,
}

/// Problems found while building the stores, all at once.
#[derive(Debug)]
pub struct BuildError {
    /// Whether the problems are in the configuration (exit 64) rather than
    /// in reaching a backend.
    pub usage: bool,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl LockService {
    /// A service over stores that are already open (tests, embedding).
    pub fn new(app_id: impl Into<String>, stores: Vec<StoreHandle>, limits: Limits) -> Self {
        let metrics = Arc::new(Metrics::new(stores.iter().map(|h| h.name.clone())));
        LockService {
            metrics,
            tracer: Tracer::off(),
            app_id: app_id.into(),
            stores: stores
                .into_iter()
                .map(|handle| (handle.name.clone(), Arc::new(handle)))
                .collect(),
            limits,
            waiters: Arc::default(),
            holds: HoldRegistry::default(),
            hold_clock: HoldClock::default(),
        }
    }

    /// Validate every component (no I/O), then open every store. A
    /// configuration problem anywhere stops everything before any store is
    /// opened.
    pub async fn build(
        app_id: &str,
        components: &[Component],
        cx: &StoreContext,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let validated =
            Self::validate(app_id, components, cx, &limits).map_err(|problems| BuildError {
                usage: true,
                problems,
            })?;
        Self::open(app_id, validated, limits).await
    }

    /// Check every component without any I/O: the store's own fields, and
    /// the service's (`keyPrefix`, `maxLeaseSeconds`). Every problem is
    /// returned, one line each.
    pub fn validate(
        app_id: &str,
        components: &[Component],
        cx: &StoreContext,
        limits: &Limits,
    ) -> Result<Vec<ValidatedStore>, Vec<String>> {
        let mut problems = Vec::new();
        let mut validated = Vec::new();
        for component in components {
            let context = |message: &str| {
                format!(
                    "{}: component {:?} ({}): {message}",
                    component.source.display(),
                    component.name,
                    component.type_name
                )
            };
            let scope = match KeyScope::new(
                component.metadata.get("keyPrefix"),
                &component.name,
                app_id,
            ) {
                // daprd adds the store before it saves the key prefix
                // (processor/lock), so with ignoreErrors the store stays
                // and its keys fall back to the default prefix, the app id.
                Err(err) if component.ignore_errors => {
                    tracing::warn!(
                        "{}; the store is served with the app id key prefix because ignoreErrors is set",
                        context(&err)
                    );
                    KeyScope::new(None, &component.name, app_id)
                }
                scope => scope,
            };
            let max_lease = lower_limit(component, "maxLeaseSeconds", limits.max_lease);
            let max_hold = lower_limit(component, "maxHoldSeconds", limits.max_hold);
            let config = leasehold_stores::validate(component, cx);
            match (scope, max_lease, max_hold, config) {
                (Ok(scope), Ok(max_lease), Ok(max_hold), Ok(config)) => {
                    validated.push(ValidatedStore {
                        component: component.clone(),
                        scope,
                        max_lease,
                        max_hold,
                        config,
                    })
                }
                (scope, max_lease, max_hold, config) => {
                    problems.extend(scope.err().map(|e| context(&e)));
                    problems.extend(max_lease.err().map(|e| context(&e)));
                    problems.extend(max_hold.err().map(|e| context(&e)));
                    problems.extend(config.err().into_iter().flatten().map(|e| context(&e)));
                }
            }
        }
        if problems.is_empty() {
            Ok(validated)
        } else {
            Err(problems)
        }
    }

    /// Open every validated store, each within its init timeout.
    pub async fn open(
        app_id: &str,
        validated: Vec<ValidatedStore>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let mut problems = Vec::new();
        let mut handles = Vec::new();
        for ValidatedStore {
            component,
            scope,
            max_lease,
            max_hold,
            config,
        } in validated
        {
            // daprd's default init timeout is 5 s.
            let init_timeout = component.init_timeout.unwrap_or(Duration::from_secs(5));
            let opened =
                tokio::time::timeout(init_timeout, leasehold_stores::connect(config)).await;
            let failure = match opened {
                Ok(Ok(store)) => {
                    let capabilities = store.capabilities();
                    handles.push(StoreHandle {
                        name: component.name.clone(),
                        name_arc: Arc::from(component.name.as_str()),
                        type_name: component.type_name.clone(),
                        version: if component.version.is_empty() {
                            "v1".to_owned()
                        } else {
                            component.version.clone()
                        },
                        store,
                        scope,
                        max_lease,
                        max_hold,
                        capabilities,
                        reachable: std::sync::atomic::AtomicBool::new(true),
                        health: std::sync::Mutex::new(StoreHealth {
                            reachable: true,
                            checked_at: Some(std::time::SystemTime::now()),
                            ..StoreHealth::default()
                        }),
                    });
                    continue;
                }
                Ok(Err(err)) => format!("cannot open the store: {err}"),
                Err(_) => {
                    format!("the store did not open within the init timeout of {init_timeout:?}")
                }
            };
            let message = format!(
                "component {:?} ({}): {failure}",
                component.name, component.type_name
            );
            if component.ignore_errors {
                tracing::warn!("{message}; left out because ignoreErrors is set");
            } else {
                problems.push(message);
            }
        }
        if !problems.is_empty() {
            for handle in &handles {
                handle.store.close().await;
            }
            return Err(BuildError {
                usage: false,
                problems,
            });
        }
        Ok(LockService::new(app_id, handles, limits))
    }

    /// The sidecar's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The configured stores, by name.
    pub fn stores(&self) -> impl Iterator<Item = &Arc<StoreHandle>> {
        self.stores.values()
    }

    /// Requests waiting for a lock, over every key.
    pub fn waiting(&self) -> usize {
        self.waiters.total()
    }

    /// Open Hold streams.
    pub fn holding(&self) -> usize {
        self.holds.total()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Close every store (at shutdown).
    pub async fn close(&self) {
        for handle in self.stores.values() {
            handle.store.close().await;
        }
    }

    /// Dapr's TryLock. `Ok(Acquire::HeldByOther)` is `{"success":false}`.
    pub async fn try_lock(
        &self,
        store_name: &str,
        resource_id: &str,
        owner: &str,
        expiry_in_seconds: i64,
    ) -> Result<Acquire, ApiError> {
        if expiry_in_seconds <= 0 {
            return Err(malformed(format!(
                "ExpiryInSeconds is not positive in lock store {store_name}"
            )));
        }
        let handle = self.lookup(store_name, Some(resource_id), Some(owner))?;
        let ttl = Duration::from_secs(expiry_in_seconds as u64);
        if ttl > handle.max_lease {
            return Err(malformed(format!(
                "ExpiryInSeconds {expiry_in_seconds} is more than the maximum lease of {} seconds in lock store {store_name}",
                handle.max_lease.as_secs()
            )));
        }
        let key = handle.scope.key(resource_id).map_err(|e| {
            ApiError::new(
                ErrorKind::TryLockFailed,
                format!("failed to try acquiring lock: {e}"),
            )
        })?;
        self.call(
            handle,
            StoreOp::TryLock,
            handle.store.try_lock(&key, owner, ttl),
        )
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::TryLockFailed,
                format!("failed to try acquiring lock: {e}"),
            )
        })
    }

    /// Dapr's Unlock.
    pub async fn unlock(
        &self,
        store_name: &str,
        resource_id: &str,
        owner: &str,
    ) -> Result<Release, ApiError> {
        let handle = self.lookup(store_name, Some(resource_id), Some(owner))?;
        let key = handle.scope.key(resource_id).map_err(|e| {
            ApiError::new(
                ErrorKind::UnlockFailed,
                format!("failed to release lock: {e}"),
            )
        })?;
        self.call(handle, StoreOp::Unlock, handle.store.unlock(&key, owner))
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::UnlockFailed,
                    format!("failed to release lock: {e}"),
                )
            })
    }

    /// Steps 2 to 5 of daprd's validation, with leasehold's size limits
    /// after the emptiness checks. Calls without a resource id (listing) or
    /// without an owner (status, force-unlock) pass `None` for it, and that
    /// check is skipped.
    pub fn lookup(
        &self,
        store_name: &str,
        resource_id: Option<&str>,
        owner: Option<&str>,
    ) -> Result<&Arc<StoreHandle>, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                ErrorKind::LockStoreNotConfigured,
                "lock store is not configured",
            ));
        }
        if resource_id.is_some_and(str::is_empty) {
            return Err(malformed(format!(
                "ResourceId is empty in lock store {store_name}"
            )));
        }
        if owner.is_some_and(str::is_empty) {
            return Err(malformed(format!(
                "LockOwner is empty in lock store {store_name}"
            )));
        }
        let resource_id = resource_id.unwrap_or_default();
        let owner = owner.unwrap_or_default();
        if resource_id.len() > self.limits.max_resource_id_bytes {
            return Err(malformed(format!(
                "ResourceId is {} bytes, more than the limit of {} bytes, in lock store {store_name}",
                resource_id.len(),
                self.limits.max_resource_id_bytes
            )));
        }
        if owner.len() > self.limits.max_owner_bytes {
            return Err(malformed(format!(
                "LockOwner is {} bytes, more than the limit of {} bytes, in lock store {store_name}",
                owner.len(),
                self.limits.max_owner_bytes
            )));
        }
        self.stores.get(store_name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::LockStoreNotFound,
                format!("lock store {store_name} not found"),
            )
        })
    }

    /// Run one store call under the store timeout, and measure it.
    pub async fn call<T>(
        &self,
        handle: &StoreHandle,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let timed = async {
            match tokio::time::timeout(self.limits.store_timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout(self.limits.store_timeout)),
            }
        };
        let result =
            crate::trace::child_span(&self.tracer, op.span_name(), &handle.name, timed).await;
        let error = result.as_ref().err().map(StoreError::kind);
        self.metrics
            .store_call(&handle.name, op, started.elapsed(), error);
        handle.record_health(result.as_ref().map(|_| ()));
        if let Err(err) = &result {
            let trace_id = crate::trace::current_trace_id();
            tracing::warn!(store = %handle.name, op = ?op, trace_id, error = %err, "store call failed");
        }
        result
    }

    /// Export spans of store calls through `tracer`.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The tracer in use.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

fn malformed(message: String) -> ApiError {
    ApiError::new(ErrorKind::MalformedRequest, message)
}

/// A component may lower (never raise) one of the sidecar's limits with a
/// metadata field in whole seconds (`maxLeaseSeconds`, `maxHoldSeconds`).
fn lower_limit(component: &Component, field: &str, limit: Duration) -> Result<Duration, String> {
    let Some(raw) = component.metadata.get(field).filter(|v| !v.is_empty()) else {
        return Ok(limit);
    };
    match raw.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "metadata `{field}`: {raw:?} is not a positive whole number of seconds"
        )),
        Ok(seconds) => Ok(Duration::from_secs(seconds).min(limit)),
    }
}
