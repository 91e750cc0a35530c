//! The rowsync server: an axum HTTP service in front of a [`Store`].
//!
//! The server asks every request for a token (unless told not to, on a
//! loopback address only), keeps each user to the rows of private tables
//! that are theirs, validates every change against the schema before
//! touching the database, applies each push in one store transaction, and
//! serves pulls by cursor. It keeps no state between requests that another
//! instance would need: all of it lives in the store.
//!
//! # Layout
//! - [`http`]: the router, authentication and rate limits, handlers and metrics.
//! - [`auth`]: tokens: making, parsing and judging them (pure).
//! - [`tokens`]: managing tokens on a server's database (`rowsync token`).
//! - [`error`]: the one HTTP error type (status, stable code, readable message).
//! - [`store`]: the [`Store`] trait and its adapters (SQLite, PostgreSQL, MySQL/MariaDB).
//! - [`commits`]: waking long-polling pulls when a change commits.
//! - [`tls`]: the certificate and key HTTPS is served with.
//! - [`tutorial`]: `POST /sync` and `GET /changes`, the tutorial protocol,
//!   over the same push and pull.
//! - [`config`]: validated server settings and [`run`].

pub mod auth;
pub mod commits;
pub mod config;
pub mod error;
pub mod http;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod tutorial;

pub use axum::Router;
pub use config::{build, check_insecure_listen, run, serve_router, App, BackgroundServer, DatabaseUrl, ServerConfig};
pub use error::ApiError;
pub use http::{app, AppState, Auth, Caller, Limits, WallClock};
pub use store::{PoolSettings, Store, StoreError};
pub use tls::{Tls, TlsError};
