//! `dapr.proto.runtime.v1.Dapr`: the lock methods and `GetMetadata`. Every
//! other Dapr method answers UNIMPLEMENTED, which the generated server does
//! for methods the proto subset leaves out.

use std::sync::Arc;

use leasehold_proto::dapr::dapr_server::{Dapr, DaprServer};
use leasehold_proto::dapr::{
    Empty, GetMetadataRequest, GetMetadataResponse, SetMetadataRequest, TryLockRequest,
    TryLockResponse, UnlockRequest, UnlockResponse,
};
use tonic::{Request, Response, Status};

use crate::app::AppState;
use crate::service::dapr::{TryLock, Unlock};
use crate::wire::dapr as wire;

/// The Dapr service over the shared state.
#[derive(Debug, Clone)]
pub struct DaprApi {
    app: Arc<AppState>,
}

/// The Dapr service, ready to add to a tonic server.
pub fn service(app: Arc<AppState>) -> DaprServer<DaprApi> {
    DaprServer::new(DaprApi { app })
}

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn try_lock_alpha1(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<TryLockResponse>, Status> {
        let outcome = super::serve::<_, TryLock>(&self.app, request).await?;
        Ok(Response::new(wire::try_lock_response(outcome)))
    }

    async fn unlock_alpha1(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let outcome = super::serve::<_, Unlock>(&self.app, request).await?;
        Ok(Response::new(wire::unlock_response(outcome)))
    }

    async fn get_metadata(
        &self,
        _request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        let mut metadata = wire::metadata(&self.app.service);
        metadata.extended_metadata = self
            .app
            .extended_metadata(&metadata.extended_metadata)
            .into_iter()
            .collect();
        Ok(Response::new(metadata))
    }

    async fn set_metadata(
        &self,
        request: Request<SetMetadataRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        // An empty key changes nothing, as in daprd.
        if !request.key.is_empty() {
            self.app.set_extended_metadata(request.key, request.value);
        }
        Ok(Response::new(Empty {}))
    }
}
