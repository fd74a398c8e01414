//! The gRPC front end: `dapr.proto.runtime.v1.Dapr` with the lock methods
//! and `GetMetadata`. Every other Dapr method answers UNIMPLEMENTED, which
//! the generated server does for methods the proto subset leaves out.

use std::collections::HashMap;
use std::sync::Arc;

use leasehold_core::Acquire;
use leasehold_proto::dapr::dapr_server::{Dapr, DaprServer};
use leasehold_proto::dapr::{
    ActorRuntime, GetMetadataRequest, GetMetadataResponse, RegisteredComponents, TryLockRequest,
    TryLockResponse, UnlockRequest, UnlockResponse,
};
use leasehold_proto::google_rpc;
use prost::Message;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::AppState;
use crate::auth::{Refusal, TOKEN_HEADER};
use crate::metrics::{Op, Outcome, Transport};

/// The Dapr service over the shared state.
#[derive(Debug, Clone)]
pub struct DaprApi {
    app: Arc<AppState>,
}

/// daprd's token check, in front of every method.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    app: Arc<AppState>,
}

impl TokenCheck {
    /// A check over the shared state's tokens.
    pub fn new(app: Arc<AppState>) -> Self {
        TokenCheck { app }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.app.auth.api.is_some() {
            let presented = request.metadata().get(TOKEN_HEADER).map(|v| v.as_bytes());
            match self.app.auth.check_api(presented) {
                // daprd removes the token before the handler runs.
                Ok(()) => {
                    request.metadata_mut().remove(TOKEN_HEADER);
                }
                Err(refusal) => return Err(unauthenticated(refusal)),
            }
        }
        Ok(request)
    }
}

/// The Dapr service with daprd's token check in front of every method.
pub fn dapr_service(app: Arc<AppState>) -> InterceptedService<DaprServer<DaprApi>, TokenCheck> {
    let check = TokenCheck { app: app.clone() };
    InterceptedService::new(DaprServer::new(DaprApi { app }), check)
}

/// daprd's refusal: UNAUTHENTICATED, message `Unauthorized`, and an
/// `ErrorInfo` detail that says which check failed.
pub(crate) fn unauthenticated(refusal: Refusal) -> Status {
    let detail = match refusal {
        Refusal::Missing => "missing api token in request metadata",
        Refusal::Mismatch => "authentication error: api token mismatch",
    };
    let info = google_rpc::ErrorInfo {
        reason: "Unauthorized".to_owned(),
        domain: "dapr.io".to_owned(),
        metadata: HashMap::from([
            ("http.code".to_owned(), "401".to_owned()),
            ("http.error_message".to_owned(), detail.to_owned()),
        ]),
    };
    let status = google_rpc::Status {
        code: tonic::Code::Unauthenticated as i32,
        message: "Unauthorized".to_owned(),
        details: vec![google_rpc::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Unauthenticated,
        "Unauthorized",
        status.encode_to_vec().into(),
    )
}

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn try_lock_alpha1(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<TryLockResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .app
            .service
            .try_lock(
                &r.store_name,
                &r.resource_id,
                &r.lock_owner,
                r.expiry_in_seconds.into(),
            )
            .await;
        self.app.service.metrics().request(
            Op::TryLock,
            Transport::Grpc,
            &r.store_name,
            Outcome::of_acquire(&outcome),
        );
        Ok(Response::new(match outcome? {
            Acquire::Acquired { fence } => TryLockResponse {
                success: true,
                fencing_token: fence,
            },
            Acquire::HeldByOther => TryLockResponse {
                success: false,
                fencing_token: 0,
            },
        }))
    }

    async fn unlock_alpha1(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .app
            .service
            .unlock(&r.store_name, &r.resource_id, &r.lock_owner)
            .await;
        self.app.service.metrics().request(
            Op::Unlock,
            Transport::Grpc,
            &r.store_name,
            Outcome::of_release(&outcome),
        );
        Ok(Response::new(UnlockResponse {
            status: outcome?.dapr_status(),
        }))
    }

    async fn get_metadata(
        &self,
        _request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        let app = &self.app;
        let registered_components = app
            .components()
            .into_iter()
            .map(|c| RegisteredComponents {
                name: c.name,
                r#type: c.type_name,
                version: c.version,
                capabilities: c.capabilities,
            })
            .collect();
        Ok(Response::new(GetMetadataResponse {
            id: app.service.app_id().to_owned(),
            registered_components,
            extended_metadata: HashMap::from([(
                "daprRuntimeVersion".to_owned(),
                crate::RUNTIME_VERSION.to_owned(),
            )]),
            runtime_version: crate::RUNTIME_VERSION.to_owned(),
            enabled_features: Vec::new(),
            actor_runtime: Some(ActorRuntime {
                runtime_status: leasehold_proto::dapr::actor_runtime::ActorRuntimeStatus::Disabled
                    as i32,
                host_ready: false,
                placement: String::new(),
            }),
        }))
    }
}
