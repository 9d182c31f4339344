//! The node: start one, talk to it through a [`NodeHandle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use starling::core::{Key, Namespace};
//! use starling::node::{Node, NodeConfig};
//!
//! let mut config = NodeConfig::default();
//! config.data_dir = "/var/lib/gateway/starling".into();
//! config.mdns = false;
//! config.bootstrap = vec!["/ip4/10.0.0.5/tcp/4001/p2p/12D3KooW...".into()];
//! let node = Node::start(config).await?;
//! let ns = Namespace::new("prod")?;
//! node.put(&ns, &Key::new("routes/v1")?, b"upstream=a".to_vec()).await?;
//! let entry = node.get(&ns, &Key::new("routes/v1")?).await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Modules, none importing another in a circle (and none importing this
//! one): the leaves `clock`, `config` and `types`; `error` (uses
//! `config`); `watch`, the watch hub (uses `types`); `request`, what a
//! handle asks of the driver (uses `types`, `watch`); `metrics` (uses
//! `clock`, `types`); `handle` (uses the leaves, `request`, `watch`,
//! `metrics`); `driver`, the node's task (uses `clock`, `types`, `watch`,
//! `request`, `metrics`); `start` (uses `driver`, `handle`, `picker`); and, with the
//! `test-utils` feature, `testing` (uses `start`, `handle`, `config`,
//! `error`). Picks: `picker`, a leaf holding the per-service pick state
//! the handle carries; `pick`, `NodeHandle::pick` (uses `handle`,
//! `picker`, `error`). Health checks: `checks/` (a folder; uses
//! `handle`, `clock`, `error`, `types`), run by the node for its own
//! instances; `services_dir`, service files (uses `checks`, `handle`).

mod checks;
mod clock;
mod config;
mod driver;
mod error;
mod handle;
mod held;
mod limits;
mod links;
pub(crate) mod metrics;
mod pick;
mod picker;
mod probe;
mod request;
mod services_dir;
mod start;
#[cfg(feature = "test-utils")]
pub mod testing;
mod types;
mod watch;

pub(crate) use checks::validate_checks;
pub use checks::{CheckSpec, CheckStatus, MAX_CHECKS_PER_INSTANCE, MAX_CHECKS_PER_NODE};
pub use config::{LogFormat, NodeConfig, NodeConfigError, ReloadError};
pub use error::NodeError;
pub use handle::NodeHandle;
pub use limits::Limits;
pub use picker::Picked;
pub use start::Node;
pub use types::{
    AclView, MemberView, NodeStatus, WatchError, WatchFilter, WatchItem, WriteResult, WriterView,
};
pub use watch::WatchStream;
