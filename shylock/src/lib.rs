//! Typed configuration structs filled from etcd keys and swapped live.
//!
//! Declare a plain struct, derive [`EtcdConfig`], and [`Client::config`] reads
//! every key it needs at one etcd revision, then keeps it current with one
//! watch: each change builds a whole new struct, validates it and swaps it in
//! with [`arc_swap`]. Readers never lock and never see half an update; a bad
//! value never replaces the last good config.
//!
//! ```no_run
//! use std::time::Duration;
//! use shylock::{Client, ConnectOptions, EtcdConfig};
//!
//! #[derive(EtcdConfig)]
//! #[etcd(rename_all = "kebab-case")]
//! struct App {
//!     listen_port: u16,                 // key <prefix>/listen-port
//!     #[etcd(default = "30s")]
//!     timeout: Duration,                // <prefix>/timeout, "30s" when missing
//!     #[etcd(key = "db/url")]
//!     database: String,                 // <prefix>/db/url
//!     #[etcd(secret)]
//!     api_token: String,                // never in Debug, logs or errors
//! }
//!
//! # async fn run() -> shylock::Result<()> {
//! let client = Client::connect(ConnectOptions::new(["http://127.0.0.1:2379"])).await?;
//! let app = client.config::<App>("/myapp/production").await?;
//! let now = app.load();
//! println!("port {} (revision {})", now.listen_port, now.revision());
//! # Ok(()) }
//! ```
//!
//! The README has the full attribute reference.
#![warn(missing_docs)]

mod access;
mod auth;
mod client;
mod config;
mod decode;
mod error;
mod event;
mod hub;
mod live;
mod load;
mod memory;
pub mod report;
mod schema;
mod snapshot;
mod startup;
mod status;
mod telemetry;
mod tls;
mod tree;
mod watch_tree;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "testing")]
pub mod testing;

pub use shylock_derive::EtcdConfig;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use crate::access::{access, Access};
pub use crate::client::{Client, ConnectOptions};
pub use crate::config::{Dependency, DependencyKind, EtcdConfig};
pub use crate::decode::{DecodeError, FromValue};
pub use crate::error::{ConfigError, Error, Problem, ProblemKind, Result};
pub use crate::event::{Change, Event, KeyChange};
pub use crate::live::{Cached, Live, Publisher, Snapshot};
pub use crate::report::{Report, ReportOptions, Reporter};
pub use crate::schema::{
    schema, schema_key, Encoding, Refusal, Schema, SchemaKey, Shape, SCHEMA_ROOT, SCHEMA_VERSION,
};
pub use crate::snapshot::SnapshotError;
pub use crate::startup::{ConfigOptions, Startup};
pub use crate::status::Status;
pub use crate::tls::TlsFiles;
pub use crate::tree::{Entry, Tree};
pub use crate::watch_tree::{TreeEvent, TreeWatch};
