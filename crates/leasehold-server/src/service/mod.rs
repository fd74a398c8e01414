//! The lock service: everything that does not depend on the transport.
//!
//! Both front ends decode their wire format into an [`Operation`] and hand
//! it to [`LockService::serve`], the one path of every request (admin
//! check, the operation, metrics). Every store call goes through
//! [`LockService::call_store`], the one path to the backends (timeout,
//! trace span, latency and error metrics, health). Validation runs in
//! daprd's order (`pkg/api/universal/lock.go`), so a Dapr client gets the
//! same error for the same mistake from either transport and from either
//! sidecar.
//!
//! | module | what |
//! |---|---|
//! | [`dapr`] | TryLock and Unlock, as daprd serves them |
//! | [`locks`] | leasehold.v1: acquire with a wait, release, renew with a cap, status, listing, force-unlock, capabilities |
//! | [`hold`] | held-lock streams and their renewal task |
//! | [`health`] | what `/v1/health` reports |
//! | `limits`, `scope`, `store` | the checks, key scoping and store handles every operation shares |

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::StoreError;
use leasehold_core::manifest::Component;
use leasehold_stores::StoreContext;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{ADMIN_TOKEN_HEADER, Token};
use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::{Metrics, StoreOp};
use crate::observe::trace::{self, Tracer};

pub mod dapr;
pub mod health;
pub mod hold;
mod holds;
mod limits;
pub mod locks;
mod operation;
mod scope;
pub mod sets;
mod store;
mod waiters;

use holds::{HoldClock, HoldRegistry};
use waiters::WaitQueues;

pub(crate) use limits::malformed;
pub use limits::{LeaseAsk, Limits};
pub use operation::{Operation, Origin, Rejected};
pub use scope::KeyScope;
pub use store::{StoreHandle, StoreHealth, StoreParts};

/// The protocol-independent lock service.
#[derive(Debug)]
pub struct LockService {
    app_id: String,
    stores: HashMap<String, Arc<StoreHandle>>,
    limits: Limits,
    admin_token: Option<Token>,
    waiters: Arc<WaitQueues>,
    holds: HoldRegistry,
    hold_clock: HoldClock,
    metrics: Arc<Metrics>,
    tracer: Tracer,
    /// The tasks of Hold streams, so that shutdown can wait for them.
    tasks: TaskTracker,
    /// Cancelled when shutdown begins: Hold streams end and release.
    stopping: CancellationToken,
    /// Every component read, in daprd's order (empty: the stores alone).
    registered: Vec<Registered>,
}

/// A component that passed validation, ready to open.
#[derive(Debug)]
pub struct ValidatedStore {
    component: Component,
    scope: KeyScope,
    bounds: Bounds,
    config: leasehold_stores::StoreConfig,
}

/// Problems found while building the stores, all at once.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct BuildError {
    /// Whether the problems are in the configuration (exit 64) rather than
    /// in reaching a backend.
    pub usage: bool,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// A component the sidecar read, as its file wrote it, for the metadata
/// endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`, as written.
    pub type_name: String,
    /// `spec.version`, as written (may be empty).
    pub version: String,
    /// Whether it is a lock store (listed only when it opened).
    pub lock_store: bool,
}

/// One component as the metadata endpoints describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub type_name: String,
    /// `spec.version`.
    pub version: String,
    /// The store's declared capabilities.
    pub capabilities: Vec<String>,
}

impl LockService {
    /// A service over stores that are already open (tests, embedding).
    pub fn new(app_id: impl Into<String>, stores: Vec<StoreHandle>, limits: Limits) -> Self {
        let metrics = Arc::new(Metrics::new(stores.iter().map(|h| h.name.to_string())));
        LockService {
            metrics,
            tracer: Tracer::off(),
            app_id: app_id.into(),
            stores: stores
                .into_iter()
                .map(|handle| (handle.name.to_string(), Arc::new(handle)))
                .collect(),
            limits,
            admin_token: None,
            waiters: Arc::default(),
            holds: HoldRegistry::default(),
            hold_clock: HoldClock::default(),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            registered: Vec::new(),
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
            let bounds = store_bounds(component, limits);
            let config = leasehold_stores::validate(component, cx);
            match (scope, bounds, config) {
                (Ok(scope), Ok(bounds), Ok(config)) => validated.push(ValidatedStore {
                    component: component.clone(),
                    scope,
                    bounds,
                    config,
                }),
                (scope, bounds, config) => {
                    problems.extend(scope.err().map(|e| context(&e)));
                    problems.extend(bounds.err().into_iter().flatten().map(|e| context(&e)));
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
            bounds,
            config,
        } in validated
        {
            // daprd's default init timeout is 5 s.
            let init_timeout = component.init_timeout.unwrap_or(Duration::from_secs(5));
            let opened =
                tokio::time::timeout(init_timeout, leasehold_stores::connect(config)).await;
            let failure = match opened {
                Ok(Ok(store))
                    if !bounds.dapr_wait.is_zero() && !store.capabilities().release_notify =>
                {
                    store.close().await;
                    "tryLockWaitMs needs a store that tells waiters of releases (RELEASE_NOTIFY)"
                        .to_owned()
                }
                Ok(Ok(store)) => {
                    handles.push(StoreHandle::new(StoreParts {
                        name: component.name,
                        type_name: component.type_name,
                        version: component.version,
                        store,
                        scope,
                        max_lease: bounds.max_lease,
                        max_hold: bounds.max_hold,
                        dapr_wait: bounds.dapr_wait,
                    }));
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

    /// Export spans of store calls through `tracer`.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Require `token` for admin operations (without one, they are refused
    /// outright).
    #[must_use]
    pub fn with_admin_token(mut self, token: Option<Token>) -> Self {
        self.admin_token = token;
        self
    }

    /// List `registered` in the metadata endpoints, in this order, as the
    /// component files wrote them (lock stores only if they opened).
    #[must_use]
    pub fn with_registered(mut self, registered: Vec<Registered>) -> Self {
        self.registered = registered;
        self
    }

    /// The sidecar's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The configured stores, by name.
    pub fn stores(&self) -> impl Iterator<Item = &Arc<StoreHandle>> {
        self.stores.values()
    }

    /// The components as the metadata endpoints list them: every one read,
    /// as written, in daprd's order; without that record (a service built
    /// in code), the stores sorted by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let capabilities = |name: &str| {
            self.stores.get(name).map(|handle| {
                handle
                    .capabilities
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        if !self.registered.is_empty() {
            return self
                .registered
                .iter()
                .filter_map(|c| {
                    let capabilities = match capabilities(&c.name) {
                        Some(names) if c.lock_store => names,
                        None if c.lock_store => return None,
                        _ => Vec::new(),
                    };
                    Some(ComponentInfo {
                        name: c.name.clone(),
                        type_name: c.type_name.clone(),
                        version: c.version.clone(),
                        capabilities,
                    })
                })
                .collect();
        }
        let mut components: Vec<ComponentInfo> = self
            .stores()
            .map(|handle| ComponentInfo {
                name: handle.name.to_string(),
                type_name: handle.type_name.clone(),
                version: handle.version.clone(),
                capabilities: capabilities(&handle.name).unwrap_or_default(),
            })
            .collect();
        components.sort_by(|a, b| a.name.cmp(&b.name));
        components
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

    /// The tracer in use.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Shutdown begins: every Hold stream ends, telling its client that
    /// the sidecar is shutting down, and then releases its grant.
    pub fn begin_shutdown(&self) {
        self.stopping.cancel();
    }

    /// Close every store (at shutdown), after the Hold tasks have released
    /// their grants (for at most `grace`).
    pub async fn close(&self, grace: Duration) {
        self.begin_shutdown();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                streams = self.tasks.len(),
                "Hold streams still releasing after the grace period; their leases will run out"
            );
        }
        for handle in self.stores.values() {
            handle.store.close().await;
        }
    }

    /// Check the admin token a request presented. Admin operations are
    /// refused outright when no admin token is configured.
    pub fn check_admin(&self, presented: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_token else {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "admin operations are disabled: start the sidecar with LEASEHOLD_ADMIN_TOKEN set",
            ));
        };
        match presented {
            Some(value) if expected.matches(value) => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorKind::Forbidden,
                "the admin token does not match",
            )),
            None => Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("admin operations need the admin token in the {ADMIN_TOKEN_HEADER} header"),
            )),
        }
    }

    /// Steps 2 to 5 of daprd's validation, then leasehold's own size
    /// limits, which apply only to a request daprd would have served.
    /// Calls without a resource id (listing) or without an owner (status,
    /// force-unlock) pass `None` for it, and that check is skipped.
    pub fn lookup(
        &self,
        store_name: &str,
        resource_id: Option<&str>,
        owner: Option<&str>,
    ) -> Result<&Arc<StoreHandle>, ApiError> {
        self.lookup_named(
            store_name,
            resource_id.map(|id| ("ResourceId", id)),
            owner.map(|owner| ("LockOwner", owner)),
        )
    }

    /// [`LockService::lookup`] for calls whose fields have other names (a
    /// semaphore's `name`, an election's `candidate`): each is given with
    /// the name a refusal uses.
    pub fn lookup_named(
        &self,
        store_name: &str,
        resource: Option<(&str, &str)>,
        owner: Option<(&str, &str)>,
    ) -> Result<&Arc<StoreHandle>, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                ErrorKind::LockStoreNotConfigured,
                "lock store is not configured",
            ));
        }
        for (field, value) in [resource, owner].into_iter().flatten() {
            if value.is_empty() {
                return Err(limits::malformed(format!(
                    "{field} is empty in lock store {store_name}"
                )));
            }
        }
        let handle = self.stores.get(store_name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::LockStoreNotFound,
                format!("lock store {store_name} not found"),
            )
        })?;
        let limits = [
            resource.map(|(field, value)| (field, value, self.limits.max_resource_id_bytes)),
            owner.map(|(field, value)| (field, value, self.limits.max_owner_bytes)),
        ];
        for (field, value, limit) in limits.into_iter().flatten() {
            if value.len() > limit {
                return Err(limits::malformed(format!(
                    "{field} is {} bytes, more than the limit of {limit} bytes, in lock store {store_name}",
                    value.len()
                )));
            }
        }
        Ok(handle)
    }

    /// Run one store call under the store timeout, as a child span of the
    /// request, and record its latency, its failure and the store's health.
    pub async fn call_store<T>(
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
        let result = trace::child_span(&self.tracer, op.span_name(), &handle.name, timed).await;
        let error = result.as_ref().err().map(StoreError::kind);
        self.metrics
            .store_call(&handle.name, op, started.elapsed(), error);
        handle.record_health(result.as_ref().map(|_| ()));
        if let Err(err) = &result {
            let trace_id = trace::current_trace_id();
            tracing::warn!(store = %handle.name, op = ?op, trace_id, error = %err, "store call failed");
        }
        result
    }
}

/// What a component sets of its store's bounds.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_lease: Duration,
    max_hold: Duration,
    dapr_wait: Duration,
}

/// The bounds a component's metadata sets: `maxLeaseSeconds` and
/// `maxHoldSeconds` lower the sidecar's limits; `tryLockWaitMs` makes
/// Dapr's TryLock wait (within `--max-wait`).
fn store_bounds(component: &Component, limits: &Limits) -> Result<Bounds, Vec<String>> {
    let max_lease = lower_limit(component, "maxLeaseSeconds", limits.max_lease);
    let max_hold = lower_limit(component, "maxHoldSeconds", limits.max_hold);
    let dapr_wait = match component
        .metadata
        .get("tryLockWaitMs")
        .filter(|v| !v.is_empty())
    {
        None => Ok(Duration::ZERO),
        Some(raw) => match raw.parse::<u64>().map(Duration::from_millis) {
            Err(_) => Err(format!(
                "metadata `tryLockWaitMs`: {raw:?} is not a whole number of milliseconds"
            )),
            Ok(wait) if wait > limits.max_wait => Err(format!(
                "metadata `tryLockWaitMs`: {raw} is more than the maximum wait of {} ms (--max-wait)",
                limits.max_wait.as_millis()
            )),
            Ok(wait) => Ok(wait),
        },
    };
    match (max_lease, max_hold, dapr_wait) {
        (Ok(max_lease), Ok(max_hold), Ok(dapr_wait)) => Ok(Bounds {
            max_lease,
            max_hold,
            dapr_wait,
        }),
        (a, b, c) => Err([a.err(), b.err(), c.err()].into_iter().flatten().collect()),
    }
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

/// A store failure during a leasehold.v1 operation.
fn store_failed(err: StoreError) -> ApiError {
    ApiError::new(ErrorKind::StoreFailed, format!("lock store failed: {err}"))
}

#[cfg(test)]
mod tests;
