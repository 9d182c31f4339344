//! Node configuration: the TOML file, command-line overrides, validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::{Config as ProtocolConfig, ConfigError};
use crate::http::{HttpAccess, HttpToken};

use super::limits::Limits;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything a node needs to start. Every field has a default good enough
/// to run with no configuration at all.
///
/// In TOML, the top-level keys are the fields below and the `[protocol]`
/// table is [`crate::core::Config`]; unknown keys are rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Where state and the node's identity live.
    pub data_dir: PathBuf,
    /// libp2p listen addresses (multiaddrs). Default: an OS-chosen TCP port
    /// and, with the `quic` feature, an OS-chosen QUIC port, on all interfaces.
    pub listen: Vec<String>,
    /// HTTP API address; `None` disables the HTTP API.
    pub http: Option<SocketAddr>,
    /// Peers to dial at start (multiaddrs, ideally ending in `/p2p/<id>`).
    pub bootstrap: Vec<String>,
    /// Human-readable node name (default: the host name).
    pub name: Option<String>,
    /// Node tags (role, region, env...).
    pub tags: BTreeMap<String, String>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter, `tracing_subscriber::EnvFilter` syntax (e.g. `info`,
    /// `starling=debug`).
    pub log_level: String,
    /// Largest HTTP request body accepted, bytes.
    pub http_max_body_bytes: usize,
    /// HTTP requests per second allowed per client IP (0 = unlimited).
    pub http_rate_limit: u32,
    // --- Admission (cluster key, deny-list); see docs/SECURITY.md. ---
    /// The cluster key file (made by `starling keygen`). With a key, only
    /// nodes holding the same key complete a connection (a libp2p private
    /// network over TCP; QUIC is not available, see
    /// [`NodeConfig::validate`]). `None`: the cluster is open to anyone
    /// who can reach this node's port. Read at start (restart to change).
    pub cluster_key_file: Option<PathBuf>,
    /// Peer ids (`12D3KooW...`) whose connections are refused and closed.
    /// Reloadable: a peer added here is disconnected at once.
    pub deny_peers: Vec<String>,
    /// The protocol settings (cluster name, heartbeat interval...).
    pub protocol: ProtocolConfig,
    // --- HTTP API access (see docs/SECURITY.md) ---
    /// Bearer tokens of the HTTP API (`[[http_tokens]]`: name, role,
    /// namespaces, secret or secret_file). Empty: no token is asked for,
    /// and `http` must then be a loopback address. Reloadable.
    pub http_tokens: Vec<HttpToken>,
    /// Host names or addresses, besides loopback and the bound address,
    /// that the HTTP API answers to (its `Host` check). Reloadable.
    pub http_allowed_hosts: Vec<String>,
    /// PEM certificate chain: serve the HTTP API over HTTPS (with
    /// `http_tls_key`; cargo feature `tls`). The paths need a restart; the
    /// files are read again on every reload (certificate rotation).
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of `http_tls_cert`.
    pub http_tls_key: Option<PathBuf>,
    // --- DNS interface for service discovery (see `crate::dns`) ---
    /// DNS server address, UDP and TCP on the same port (port 0: any free
    /// port). `None` (`dns = "off"` or `dns = false` in TOML, `--no-dns`)
    /// disables it. Default `127.0.0.1:8600`. `starling run` serves it; an
    /// embedding program calls [`crate::dns::serve`] (as for `http`).
    #[serde(with = "crate::dns::config_addr")]
    pub dns: Option<SocketAddr>,
    /// The domain the DNS server answers for (default `starling.`).
    pub dns_domain: String,
    /// TTL of DNS answers and of negative answers, seconds (default 5).
    pub dns_ttl_secs: u32,
    /// A directory of service files (one TOML file per instance, with its
    /// checks) that this node registers, updates and deregisters as the
    /// files come, change and go; read every second. Restart to change.
    pub services_dir: Option<PathBuf>,
    /// Accept command health checks in HTTP registrations (default off: a
    /// command check runs a program as this node's user, so any client
    /// with `write` on a namespace could run programs here). Service files
    /// and the Rust API may always use them. Restart to change.
    pub http_command_checks: bool,
    /// Network and HTTP limits (`[limits]`; see docs/SECURITY.md). Restart
    /// to change.
    pub limits: Limits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./starling-data"),
            listen: default_listen(),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 7070))),
            bootstrap: Vec::new(),
            name: None,
            tags: BTreeMap::new(),
            mdns: true,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            http_max_body_bytes: (1 << 20) + 4096,
            http_rate_limit: 0,
            cluster_key_file: None,
            deny_peers: Vec::new(),
            protocol: ProtocolConfig::default(),
            http_tokens: Vec::new(),
            http_allowed_hosts: Vec::new(),
            http_tls_cert: None,
            http_tls_key: None,
            dns: Some(crate::dns::DEFAULT_ADDR),
            dns_domain: crate::dns::DEFAULT_DOMAIN.into(),
            dns_ttl_secs: crate::dns::DEFAULT_TTL_SECS,
            services_dir: None,
            http_command_checks: false,
            limits: Limits::default(),
        }
    }
}

/// The default listen addresses.
pub(crate) fn default_listen() -> Vec<String> {
    let mut v = vec!["/ip4/0.0.0.0/tcp/0".to_string()];
    if cfg!(feature = "quic") {
        v.push("/ip4/0.0.0.0/udp/0/quic-v1".to_string());
    }
    v
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown or mistyped field).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field.
        message: String,
    },
    /// A field's value is out of range.
    #[error("invalid config field `{field}`: {reason}")]
    Field {
        /// The field.
        field: String,
        /// What is allowed.
        reason: String,
    },
}

/// Why a hot reload was refused. Nothing was applied: the running config
/// stays in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config changes a setting that only takes effect at start.
    /// Restart the node to apply it, or change the setting back.
    #[error("config field `{field}` cannot change while running; restart the node to apply it")]
    RestartOnly {
        /// The setting, as named in the config file (`listen`,
        /// `protocol.cluster`...).
        field: &'static str,
    },
    /// The new config cannot be read or is invalid (the error names the
    /// file or field). Fix it and reload again.
    #[error(transparent)]
    Invalid(#[from] NodeConfigError),
    /// The running engine refused the new protocol settings (the error
    /// names the field).
    #[error(transparent)]
    Protocol(#[from] ConfigError),
}

impl NodeConfig {
    /// Parse a TOML file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, NodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            NodeConfigError::Parse { message, .. } => NodeConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<NodeConfig, NodeConfigError> {
        toml::from_str(text).map_err(|e| NodeConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim().to_string(),
        })
    }

    /// Check every field (including the protocol section).
    pub fn validate(&self) -> Result<(), NodeConfigError> {
        let field = |f: &str, r: String| NodeConfigError::Field {
            field: f.to_string(),
            reason: r,
        };
        for a in &self.listen {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| field("listen", format!("{a:?} is not a multiaddr: {e}")))?;
        }
        if self.listen.is_empty() {
            return Err(field("listen", "at least one listen address is needed".into()));
        }
        for a in &self.bootstrap {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| field("bootstrap", format!("{a:?} is not a multiaddr: {e}")))?;
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 128 {
                return Err(field("name", "1..=128 bytes".into()));
            }
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return Err(field(
                    "tags",
                    format!("tag {k:?}: keys 1..=64 bytes, values up to 256"),
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| field("log_level", format!("{:?}: {e}", self.log_level)))?;
        if self.http_max_body_bytes < 1024 {
            return Err(field("http_max_body_bytes", "at least 1024".into()));
        }
        if self
            .services_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(field("services_dir", "empty path".into()));
        }
        self.validate_admission()?;
        self.limits
            .validate(self.name.as_deref().unwrap_or(""), self.tags.iter())?;
        self.protocol
            .clone()
            .validated()
            .map_err(|e| NodeConfigError::Field {
                field: format!("protocol.{}", e.field),
                reason: e.reason,
            })?;
        HttpAccess::from_config(self)?;
        crate::dns::DnsOptions::from_config(self)?;
        Ok(())
    }

    /// The admission settings: every `deny_peers` entry is a peer id; with a
    /// cluster key no `listen` or `bootstrap` address may use UDP (QUIC),
    /// which has no private-network layer. The built-in default `listen`
    /// set is the exception: a keyed node drops its QUIC entry (and says
    /// so in the log) instead.
    fn validate_admission(&self) -> Result<(), NodeConfigError> {
        let field = |f: &str, r: String| NodeConfigError::Field {
            field: f.to_string(),
            reason: r,
        };
        for p in &self.deny_peers {
            p.parse::<libp2p::PeerId>()
                .map_err(|e| field("deny_peers", format!("{p:?} is not a peer id: {e}")))?;
        }
        let Some(key) = &self.cluster_key_file else {
            return Ok(());
        };
        if key.as_os_str().is_empty() {
            return Err(field("cluster_key_file", "empty path".into()));
        }
        let explicit_listen: &[String] = if self.listen == default_listen() {
            &[]
        } else {
            &self.listen
        };
        for (name, addrs) in [("listen", explicit_listen), ("bootstrap", &self.bootstrap)] {
            if let Some(a) = addrs.iter().find(|a| uses_udp(a)) {
                return Err(field(
                    name,
                    format!(
                        "{a:?} is a QUIC/UDP address, but a node with a cluster key \
                         (cluster_key_file) connects over TCP only: QUIC has no private-network \
                         layer in libp2p. Use a /tcp/ address"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Compare a freshly loaded config with the running one (`self`) for a
    /// hot reload. Returns the names of the changed settings, all of them
    /// reloadable, or an error naming the first setting that needs a
    /// restart (or the field `new` fails validation on). On error nothing
    /// should be applied: the running config stays in force.
    ///
    /// Reloadable: `log_level`, `name`, `tags`, `bootstrap`,
    /// `http_rate_limit`, `deny_peers`, `http_tokens`, `http_allowed_hosts`
    /// and the `[protocol]` settings other than `cluster`, `max_value_bytes`,
    /// `watch_log_capacity`, `max_siblings` and `max_members`.
    pub fn reload_changes(&self, new: &NodeConfig) -> Result<Vec<&'static str>, ReloadError> {
        new.validate()?;
        let fixed: [(&'static str, bool); 16] = [
            ("data_dir", self.data_dir == new.data_dir),
            ("listen", self.listen == new.listen),
            ("http", self.http == new.http),
            ("mdns", self.mdns == new.mdns),
            ("log_format", self.log_format == new.log_format),
            (
                "http_max_body_bytes",
                self.http_max_body_bytes == new.http_max_body_bytes,
            ),
            ("protocol.cluster", self.protocol.cluster == new.protocol.cluster),
            (
                "protocol.max_value_bytes",
                self.protocol.max_value_bytes == new.protocol.max_value_bytes,
            ),
            (
                "protocol.watch_log_capacity",
                self.protocol.watch_log_capacity == new.protocol.watch_log_capacity,
            ),
            (
                "protocol.max_siblings",
                self.protocol.max_siblings == new.protocol.max_siblings,
            ),
            (
                "protocol.max_members",
                self.protocol.max_members == new.protocol.max_members,
            ),
            ("http_tls_cert", self.http_tls_cert == new.http_tls_cert),
            ("http_tls_key", self.http_tls_key == new.http_tls_key),
            ("services_dir", self.services_dir == new.services_dir),
            (
                "http_command_checks",
                self.http_command_checks == new.http_command_checks,
            ),
            ("limits", self.limits == new.limits),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, same)| !same) {
            return Err(ReloadError::RestartOnly { field });
        }
        if self.cluster_key_file != new.cluster_key_file {
            return Err(ReloadError::RestartOnly {
                field: "cluster_key_file",
            });
        }
        let dns_fixed = [
            ("dns", self.dns == new.dns),
            ("dns_domain", self.dns_domain == new.dns_domain),
            ("dns_ttl_secs", self.dns_ttl_secs == new.dns_ttl_secs),
        ];
        if let Some((field, _)) = dns_fixed.iter().find(|(_, same)| !same) {
            return Err(ReloadError::RestartOnly { field });
        }
        let changed = [
            ("log_level", self.log_level != new.log_level),
            ("name", self.name != new.name),
            ("tags", self.tags != new.tags),
            ("bootstrap", self.bootstrap != new.bootstrap),
            ("http_rate_limit", self.http_rate_limit != new.http_rate_limit),
            ("protocol", self.protocol != new.protocol),
            ("http_tokens", self.http_tokens != new.http_tokens),
            (
                "http_allowed_hosts",
                self.http_allowed_hosts != new.http_allowed_hosts,
            ),
        ];
        let mut changed: Vec<&'static str> =
            changed.into_iter().filter(|(_, c)| *c).map(|(f, _)| f).collect();
        if self.deny_peers != new.deny_peers {
            changed.push("deny_peers");
        }
        Ok(changed)
    }

    /// The node name to advertise.
    pub fn effective_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "starling".into())
        })
    }
}

/// Whether a multiaddr runs over UDP (QUIC, WebTransport, WebRTC), or is
/// not a multiaddr at all (validated elsewhere).
fn uses_udp(addr: &str) -> bool {
    addr.parse::<libp2p::Multiaddr>()
        .is_ok_and(|a| a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Udp(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = NodeConfig::from_toml("").unwrap();
        assert_eq!(c, NodeConfig::default());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let err = NodeConfig::from_toml("bootstrapp = []").unwrap_err().to_string();
        assert!(err.contains("bootstrapp"), "{err}");
        let err = NodeConfig::from_toml("[protocol]\nheartbeat_ms = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_ms"), "{err}");
    }

    #[test]
    fn out_of_range_protocol_field_is_named() {
        let c = NodeConfig::from_toml("[protocol]\nphi_threshold = 0.0").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("protocol.phi_threshold"), "{err}");
    }

    #[test]
    fn reload_accepts_reloadable_changes_and_names_fixed_ones() {
        let running = NodeConfig::default();
        let mut new = running.clone();
        assert!(running.reload_changes(&new).unwrap().is_empty());
        new.tags.insert("role".into(), "gateway".into());
        new.log_level = "debug".into();
        new.protocol.heartbeat_interval_ms = 500;
        new.http_rate_limit = 50;
        let changed = running.reload_changes(&new).unwrap();
        assert_eq!(changed, ["log_level", "tags", "http_rate_limit", "protocol"]);
        let mut fixed = new.clone();
        fixed.listen = vec!["/ip4/127.0.0.1/tcp/4001".into()];
        let err = running.reload_changes(&fixed).unwrap_err();
        assert!(
            matches!(err, ReloadError::RestartOnly { field: "listen" }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("`listen`") && text.contains("restart"), "{text}");
        let mut cluster = new.clone();
        cluster.protocol.cluster = "other".into();
        let err = running.reload_changes(&cluster).unwrap_err();
        assert!(
            matches!(
                err,
                ReloadError::RestartOnly {
                    field: "protocol.cluster"
                }
            ),
            "{err:?}"
        );
        let mut invalid = new;
        invalid.protocol.phi_threshold = 0.0;
        let err = running.reload_changes(&invalid).unwrap_err();
        assert!(
            matches!(&err, ReloadError::Invalid(NodeConfigError::Field { field, .. }) if field == "protocol.phi_threshold"),
            "{err:?}"
        );
    }

    #[test]
    fn http_tokens_parse_from_toml_and_reload() {
        let text = "[[http_tokens]]\nname = \"ci\"\nrole = \"write\"\nnamespaces = [\"app\"]\nsecret = \"0123456789abcdef\"\n";
        let c = NodeConfig::from_toml(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.http_tokens[0].role, crate::http::HttpRole::Write);
        let changed = NodeConfig::default().reload_changes(&c).unwrap();
        assert_eq!(changed, ["http_tokens"]);
        let err = NodeConfig::from_toml(&text.replace("write", "root")).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
        let mut tls = c.clone();
        tls.http_tls_cert = Some("c.pem".into());
        tls.http_tls_key = Some("k.pem".into());
        let err = c.reload_changes(&tls).unwrap_err();
        assert!(
            matches!(
                err,
                ReloadError::RestartOnly {
                    field: "http_tls_cert"
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_non_loopback_http_address_without_token_is_refused_by_name() {
        let c = NodeConfig::from_toml("http = \"0.0.0.0:7070\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`http_tokens`"), "{err}");
    }

    #[test]
    fn bad_multiaddr_is_named() {
        let c = NodeConfig::from_toml("listen = [\"tcp://x\"]").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("listen"));
    }

    #[test]
    fn deny_peers_must_be_peer_ids_and_reload_without_restart() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let running = NodeConfig::from_toml(&format!("deny_peers = [\"{peer}\"]")).unwrap();
        running.validate().unwrap();
        let mut new = running.clone();
        new.deny_peers.clear();
        assert_eq!(running.reload_changes(&new).unwrap(), ["deny_peers"]);
        new.deny_peers.push("not-a-peer".into());
        let err = new.validate().unwrap_err().to_string();
        assert!(err.contains("deny_peers") && err.contains("not-a-peer"), "{err}");
    }

    #[test]
    fn a_cluster_key_needs_a_restart_and_refuses_quic_addresses() {
        let running = NodeConfig::default();
        let mut keyed = running.clone();
        keyed.cluster_key_file = Some("cluster.key".into());
        keyed
            .validate()
            .expect("the default listen set is fine: QUIC is dropped at start");
        let err = running.reload_changes(&keyed).unwrap_err();
        assert!(
            matches!(
                err,
                ReloadError::RestartOnly {
                    field: "cluster_key_file"
                }
            ),
            "{err:?}"
        );
        let mut quic = keyed.clone();
        quic.listen = vec!["/ip4/0.0.0.0/udp/4001/quic-v1".into()];
        let err = quic.validate().unwrap_err().to_string();
        assert!(err.contains("`listen`") && err.contains("QUIC"), "{err}");
        let mut quic = keyed;
        quic.bootstrap = vec!["/ip4/10.0.0.5/udp/4001/quic-v1".into()];
        let err = quic.validate().unwrap_err().to_string();
        assert!(err.contains("`bootstrap`") && err.contains("TCP only"), "{err}");
        // Without a key, QUIC is fine.
        let open = NodeConfig {
            bootstrap: vec!["/ip4/10.0.0.5/udp/4001/quic-v1".into()],
            ..NodeConfig::default()
        };
        open.validate().unwrap();
    }
}
