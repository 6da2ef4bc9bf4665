//! tonic answers a request above the decoding size limit with `OUT_OF_RANGE` before any
//! handler runs; lockstep's API promises `RESOURCE_EXHAUSTED` with the limit named. This
//! service wrapper rewrites such answers. (Handlers never answer `OUT_OF_RANGE` themselves,
//! so every such answer is a size-limit refusal.)

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

/// Wraps a generated gRPC service.
#[derive(Clone)]
pub(crate) struct SizeLimited<S> {
    inner: S,
    limit: usize,
}

impl<S> SizeLimited<S> {
    pub(crate) fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for SizeLimited<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let out_of_range = resp
                .headers()
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"11");
            if out_of_range {
                return Ok(oversized(limit).into_http());
            }
            Ok(resp)
        })
    }
}

/// The status for a message above the size limit.
pub(crate) fn oversized(limit: usize) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "message too large: the limit is {limit} bytes (max_message_bytes)"
    ))
}

/// Maps a decoding error of a request stream: an oversized message becomes
/// `RESOURCE_EXHAUSTED`, anything else is passed on.
pub(crate) fn map_stream_error(status: tonic::Status, limit: usize) -> tonic::Status {
    if status.code() == tonic::Code::OutOfRange {
        oversized(limit)
    } else {
        status
    }
}
