//! The rowsync server: an axum HTTP service in front of a [`Store`].
//!
//! The server authenticates nothing yet, validates every change against the
//! schema before touching the database, applies each push in one store
//! transaction, and serves pulls by cursor. It keeps no state between
//! requests that another instance would need: all of it lives in the store.
//!
//! # Layout
//! - [`http`]: the router, handlers and metrics.
//! - [`error`]: the one HTTP error type (status, stable code, readable message).
//! - [`store`]: the [`Store`] trait and its adapters (SQLite, PostgreSQL, MySQL/MariaDB).
//! - [`commits`]: waking long-polling pulls when a change commits.
//! - [`config`]: validated server settings and [`run`].

pub mod commits;
pub mod config;
pub mod error;
pub mod http;
pub mod store;

pub use axum::Router;
pub use config::{build, run, serve_router, App, BackgroundServer, DatabaseUrl, ServerConfig};
pub use error::ApiError;
pub use http::{app, AppState, WallClock};
pub use store::{PoolSettings, Store, StoreError};
