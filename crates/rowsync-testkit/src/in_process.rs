//! The server's HTTP API called inside the test process, without a socket:
//! the same router, handlers, JSON bodies and error answers as over the
//! network, on a single-threaded runtime that runs only while a request is
//! answered. The seeded simulation runs its many cases on it.

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use rowsync_client::transport::{pull_path, read_answer};
use rowsync_client::{ClientError, Transport};
use rowsync_proto::{PullRequest, PullResponse, PushRequest, PushResponse, Schema};
use rowsync_server::ServerConfig;
use tower::ServiceExt;

/// A server answering in this process.
pub struct InProcessServer {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

impl InProcessServer {
    /// Opens the store of `config` and builds the server on it.
    pub fn start(config: &ServerConfig) -> InProcessServer {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let app = runtime.block_on(rowsync_server::build(config)).expect("the server starts");
        InProcessServer { runtime, router: app.router }
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a request");
        let (status, body) = self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.expect("the router answers");
            let status = response.status().as_u16();
            (status, axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body"))
        });
        read_answer("in-process", status, &body)
    }
}

impl Transport for InProcessServer {
    fn schema(&self) -> Result<Schema, ClientError> {
        self.call(Method::GET, "/v1/schema", Vec::new())
    }

    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        let body = serde_json::to_vec(request).expect("a push body");
        self.call(Method::POST, "/v1/push", body)
    }

    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        self.call(Method::GET, &pull_path(request), Vec::new())
    }
}
