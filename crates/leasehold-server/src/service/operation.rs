//! An operation of the service, written once and served the same way over
//! every transport.
//!
//! A front end turns its wire message into an [`Operation`] (or a
//! [`Rejected`] request when the message is malformed) and hands it to
//! [`LockService::serve`]: the one path every request takes, which checks
//! the admin token of admin operations, runs the operation and counts the
//! request in the metrics. An operation added later cannot forget any of
//! it.

use std::future::Future;
use std::sync::Arc;

use crate::error::ApiError;
use crate::observe::metrics::{Op, Outcome, Transport};

use super::LockService;

/// Where a request came from, as far as the service cares.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The front end that received it.
    pub transport: Transport,
    /// The admin token it presented, if any.
    pub admin_token: Option<&'a [u8]>,
}

impl<'a> Origin<'a> {
    /// A request over `transport` presenting `admin_token`.
    pub fn new(transport: Transport, admin_token: Option<&'a [u8]>) -> Self {
        Origin {
            transport,
            admin_token,
        }
    }
}

/// A request that could not become an operation (its body did not decode,
/// a field was out of range), with the store it named, for the metrics.
#[derive(Debug)]
pub struct Rejected {
    /// The store the request named.
    pub store: String,
    /// Why it was refused.
    pub error: ApiError,
}

impl Rejected {
    /// A refusal of a request to `store`.
    pub fn new(store: impl Into<String>, error: ApiError) -> Self {
        Rejected {
            store: store.into(),
            error,
        }
    }
}

/// One operation of the service.
pub trait Operation: Send + Sized {
    /// What it answers.
    type Output: Send;
    /// Its name in the metrics.
    const OP: Op;
    /// Whether it needs the admin token (it can break someone's lock or
    /// list everyone's).
    const ADMIN: bool = false;

    /// The store it is addressed to.
    fn store(&self) -> &str;

    /// How an answer is counted.
    fn outcome(_output: &Self::Output) -> Outcome {
        Outcome::Ok
    }

    /// Do it.
    fn run(
        self,
        service: &Arc<LockService>,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;
}

impl LockService {
    /// Serve one request: the admin check for admin operations, the
    /// operation, and the count in the metrics, whatever the transport.
    pub async fn serve<O: Operation>(
        self: &Arc<Self>,
        origin: Origin<'_>,
        request: Result<O, Rejected>,
    ) -> Result<O::Output, ApiError> {
        let admin = if O::ADMIN {
            self.check_admin(origin.admin_token)
        } else {
            Ok(())
        };
        let (store, result) = match (admin, request) {
            (Err(error), Ok(op)) => (self.metrics().store_index(op.store()), Err(error)),
            (Err(error), Err(rejected)) => {
                (self.metrics().store_index(&rejected.store), Err(error))
            }
            (Ok(()), Err(rejected)) => (
                self.metrics().store_index(&rejected.store),
                Err(rejected.error),
            ),
            (Ok(()), Ok(op)) => {
                let store = self.metrics().store_index(op.store());
                (store, op.run(self).await)
            }
        };
        let outcome = match &result {
            Ok(output) => O::outcome(output),
            Err(err) => Outcome::of_error(err),
        };
        self.metrics()
            .request(O::OP, origin.transport, store, outcome);
        result
    }
}
