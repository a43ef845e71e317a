//! How to lock inside a web handler (axum here; any framework that takes an
//! `async fn` works the same): `#[lock]` on the handler itself, with
//! extractors in its arguments, or [`Lock`](crate::Lock) by hand inside it,
//! and which HTTP status each [`LockError`](crate::LockError) becomes.
//!
//! # Statuses
//!
//! | error | status | why |
//! |---|---|---|
//! | `Busy`, `Timeout` | `409 Conflict` | another request is working on the same resource right now; the request was valid and may succeed later |
//! | `Backend` | `503 Service Unavailable` | the lock store is down or slow; nothing is wrong with the request, and retrying after a pause may work |
//! | `NotHeld` and anything else | `500 Internal Server Error` | the lock was lost while the work ran (its effects may have overlapped another holder's), or the program or its configuration is wrong |
//!
//! Why 409 for a busy lock, and not 423 or 429: `423 Locked` comes from
//! WebDAV, where it tells a client that a lock *it can see and manage*
//! blocks the resource; our locks are server-internal. `429 Too Many
//! Requests` says this client sent too many requests, and clients (and
//! proxies) answer it with rate-limit back-off; a busy lock is about the
//! resource, not the client's rate. `409 Conflict` says the request
//! conflicts with the resource's current state, which is what a concurrent
//! operation on it is. Keep the wait short (`wait_for_ms`): a handler that
//! waits holds its connection, and the client's own timeout is usually
//! shorter than the lock's.
//!
//! # `#[lock]` on a handler
//!
//! The key template reads names bound by the argument patterns, so
//! `Path(id): Path<u64>` offers `<id>`. The handler stays an `async fn` with
//! the same arguments, so axum accepts it as a handler; the lock is released
//! before the response is sent.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use axum::body::Body;
//! use axum::extract::{Path, State};
//! use axum::http::{Request, StatusCode};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::post;
//! use axum::Router;
//! use lock_runtime::backend::{BackendError, BackendErrorKind};
//! use lock_runtime::{lock, Lock, LockError, Operation};
//! use tower::ServiceExt as _; // `oneshot`
//!
//! #[derive(Debug, thiserror::Error)]
//! enum AppError {
//!     #[error(transparent)]
//!     Lock(#[from] LockError),
//!     #[error("invoice {0} does not exist")]
//!     NoSuchInvoice(u64),
//! }
//!
//! impl IntoResponse for AppError {
//!     fn into_response(self) -> Response {
//!         let status = match &self {
//!             AppError::Lock(e) if e.is_contention() => StatusCode::CONFLICT,
//!             AppError::Lock(LockError::Backend { .. }) => StatusCode::SERVICE_UNAVAILABLE,
//!             AppError::Lock(_) => StatusCode::INTERNAL_SERVER_ERROR,
//!             AppError::NoSuchInvoice(_) => StatusCode::NOT_FOUND,
//!         };
//!         // Log the details, show the client a short reason.
//!         if status.is_server_error() {
//!             tracing::error!(error = %self, "request failed");
//!         }
//!         (status, self.to_string()).into_response()
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct AppState {
//!     settled: Arc<Mutex<Vec<u64>>>,
//! }
//!
//! // One settlement per invoice at a time; a second request for the same
//! // invoice waits up to 100 ms, then gets 409.
//! #[lock("invoice-<id>", wait_for_ms = 100)]
//! async fn settle(Path(id): Path<u64>, State(state): State<AppState>) -> Result<String, AppError> {
//!     if id == 0 {
//!         return Err(AppError::NoSuchInvoice(id));
//!     }
//!     state.settled.lock().unwrap().push(id);
//!     Ok(format!("invoice {id} settled"))
//! }
//!
//! // The same lock by hand, when the key needs more than the arguments
//! // (here, a look-up) or only part of the handler needs the lock.
//! async fn refund(Path(id): Path<u64>, State(state): State<AppState>) -> Result<String, AppError> {
//!     let guard = Lock::new(format!("invoice-{id}"))
//!         .wait_for(std::time::Duration::from_millis(100))
//!         .acquire_async()
//!         .await?;
//!     state.settled.lock().unwrap().retain(|&i| i != id);
//!     guard.release_async().await?; // or let it drop; this reports a lost lock
//!     Ok(format!("invoice {id} refunded"))
//! }
//!
//! fn app(state: AppState) -> Router {
//!     Router::new()
//!         .route("/invoices/{id}/settle", post(settle))
//!         .route("/invoices/{id}/refund", post(refund))
//!         .with_state(state)
//! }
//!
//! async fn call(app: Router, uri: &str) -> (StatusCode, String) {
//!     let request = Request::post(uri).body(Body::empty()).unwrap();
//!     let response = app.oneshot(request).await.unwrap();
//!     let status = response.status();
//!     let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
//!     (status, String::from_utf8(body.to_vec()).unwrap())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let state = AppState::default();
//! let app = app(state.clone());
//!
//! assert_eq!(call(app.clone(), "/invoices/7/settle").await, (StatusCode::OK, "invoice 7 settled".into()));
//! assert_eq!(call(app.clone(), "/invoices/0/settle").await.0, StatusCode::NOT_FOUND);
//!
//! // Another request (here: this test) is working on invoice 7.
//! let busy = Lock::new("invoice-7").acquire_async().await.unwrap();
//! assert_eq!(call(app.clone(), "/invoices/7/settle").await.0, StatusCode::CONFLICT);
//! assert_eq!(call(app.clone(), "/invoices/7/refund").await.0, StatusCode::CONFLICT);
//! assert_eq!(call(app.clone(), "/invoices/8/settle").await.0, StatusCode::OK, "another invoice");
//! drop(busy);
//! assert_eq!(call(app.clone(), "/invoices/7/refund").await.0, StatusCode::OK);
//! assert_eq!(*state.settled.lock().unwrap(), [8]);
//!
//! // A failing store is 503, not 409.
//! let down = LockError::Backend {
//!     alias: "shared".into(),
//!     key: "invoice-7".into(),
//!     op: Operation::Acquire,
//!     source: BackendError::new(BackendErrorKind::Connection, "connection refused"),
//! };
//! let response = AppError::from(down).into_response();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! # }
//! ```
//!
//! Serving it is ordinary axum; configure the aliases before the first
//! request (here from `LOCK_ALIAS_<NAME>` variables, e.g.
//! `LOCK_ALIAS_DEFAULT=redis://redis.internal:6379/0`, so that every
//! instance of the service shares its locks):
//!
//! ```no_run
//! # use axum::Router;
//! # fn app() -> Router { Router::new() }
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     lock_runtime::registry::configure_from_env()?;
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     axum::serve(listener, app()).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Things to know
//!
//! - With the embedded store (the alias `default` when nothing is
//!   configured), the lock only covers the requests of one process. Behind
//!   a load balancer, point the alias at Redis (see
//!   [`choosing_a_store`](super::choosing_a_store)).
//! - If the handler's future is dropped part-way (a timeout layer, a
//!   server that cancels the request), a lock still being waited for is
//!   given up and a held one is released, as for any locked `async fn`.
//! - Waiting sync code must not run on the executor: call a sync
//!   `#[lock]` function through `tokio::task::spawn_blocking`.
