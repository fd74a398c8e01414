//! `dapr.proto.runtime.v1`: TryLock, Unlock and GetMetadata.

use std::collections::HashMap;

use leasehold_core::{Acquire, Release};
use leasehold_proto::dapr::{
    ActorRuntime, GetMetadataResponse, RegisteredComponents, TryLockRequest, TryLockResponse,
    UnlockRequest, UnlockResponse, actor_runtime::ActorRuntimeStatus,
};

use crate::service::dapr::{TryLock, Unlock};
use crate::service::{LeaseAsk, LockService, Rejected};

/// The version string shown by the metadata endpoints.
pub const RUNTIME_VERSION: &str = concat!("leasehold-", env!("CARGO_PKG_VERSION"));

impl TryFrom<TryLockRequest> for TryLock {
    type Error = Rejected;

    fn try_from(r: TryLockRequest) -> Result<Self, Rejected> {
        Ok(TryLock {
            store: r.store_name,
            resource_id: r.resource_id,
            owner: r.lock_owner,
            expiry: LeaseAsk::Seconds(r.expiry_in_seconds.into()),
        })
    }
}

impl TryFrom<UnlockRequest> for Unlock {
    type Error = Rejected;

    fn try_from(r: UnlockRequest) -> Result<Self, Rejected> {
        Ok(Unlock {
            store: r.store_name,
            resource_id: r.resource_id,
            owner: r.lock_owner,
        })
    }
}

/// The answer to TryLock; the fencing token is leasehold's field 1000.
pub fn try_lock_response(outcome: Acquire) -> TryLockResponse {
    match outcome {
        Acquire::Acquired { fence } => TryLockResponse {
            success: true,
            fencing_token: fence,
        },
        Acquire::HeldByOther => TryLockResponse {
            success: false,
            fencing_token: 0,
        },
    }
}

/// The answer to Unlock: Dapr's numeric status.
pub fn unlock_response(outcome: Release) -> UnlockResponse {
    UnlockResponse {
        status: outcome.dapr_status(),
    }
}

/// The answer to GetMetadata (`GET /v1.0/metadata` over HTTP).
pub fn metadata(service: &LockService) -> GetMetadataResponse {
    GetMetadataResponse {
        id: service.app_id().to_owned(),
        registered_components: service
            .components()
            .into_iter()
            .map(|c| RegisteredComponents {
                name: c.name,
                r#type: c.type_name,
                version: c.version,
                capabilities: c.capabilities,
            })
            .collect(),
        extended_metadata: HashMap::from([(
            "daprRuntimeVersion".to_owned(),
            RUNTIME_VERSION.to_owned(),
        )]),
        runtime_version: RUNTIME_VERSION.to_owned(),
        enabled_features: Vec::new(),
        actor_runtime: Some(ActorRuntime {
            runtime_status: ActorRuntimeStatus::Disabled as i32,
            host_ready: false,
            placement: String::new(),
        }),
    }
}
