//! `starling run`: build the config, start the node and its HTTP API, print
//! one "ready" line, and shut down gracefully on SIGINT / SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::{logging, LogFormatArg, RunArgs, EXIT_FAILED, EXIT_USAGE};
use crate::dns;
use crate::http::{self, HttpAccess, HttpLimits};
use crate::node::{LogFormat, Node, NodeConfig, NodeConfigError, NodeHandle, NodeStatus};

/// How long to wait for the node's first listen address before printing
/// the ready line anyway.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// How long open HTTP requests get to finish at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(5);

impl RunArgs {
    /// The file (or the defaults), then the flags over it, validated.
    pub(crate) fn to_config(&self) -> Result<NodeConfig, NodeConfigError> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        if let Some(h) = self.http {
            c.http = Some(h);
        }
        if self.no_http {
            c.http = None;
        }
        if !self.bootstrap.is_empty() {
            c.bootstrap = self.bootstrap.clone();
        }
        if let Some(cluster) = &self.cluster {
            c.protocol.cluster = cluster.clone();
        }
        if let Some(name) = &self.name {
            c.name = Some(name.clone());
        }
        for (k, v) in &self.tags {
            c.tags.insert(k.clone(), v.clone());
        }
        if self.no_mdns {
            c.mdns = false;
        }
        if let Some(f) = self.log_format {
            c.log_format = match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        if let Some(level) = &self.log_level {
            c.log_level = level.clone();
        }
        if let Some(key) = &self.cluster_key {
            c.cluster_key_file = Some(key.clone());
        }
        if let Some(d) = self.dns {
            c.dns = Some(d);
        }
        if self.no_dns {
            c.dns = None;
        }
        if let Some(domain) = &self.dns_domain {
            c.dns_domain = domain.clone();
        }
        if let Some(dir) = &self.services_dir {
            c.services_dir = Some(dir.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// `starling run`.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("starling: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = logging::init(config.log_format, &config.log_level) {
        eprintln!("starling: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starling: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(run_node(config, args))
}

async fn run_node(config: NodeConfig, args: RunArgs) -> ExitCode {
    let node = match Node::start(config.clone()).await {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(error = %e, "node failed to start");
            eprintln!("starling: cannot start the node: {e}");
            // A bad cluster key file, or an identity key file or directory
            // open to other users, is a configuration error.
            let code = if matches!(&e, crate::node::NodeError::ClusterKey(_))
                || matches!(&e, crate::node::NodeError::Identity(i) if i.is_permissions())
            {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            return ExitCode::from(code);
        }
    };
    logging::set_node_id(node.peer_id());
    let access = match HttpAccess::from_config(&config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("starling: {e}");
            let _ = node.shutdown().await;
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let server = match config.http {
        Some(addr) => {
            match http::serve_with_access(node.clone(), addr, HttpLimits::from_config(&config), access).await
            {
                Ok(server) => Some(server),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot serve the HTTP API");
                    eprintln!("starling: cannot serve the HTTP API on {addr}: {e}");
                    let _ = node.shutdown().await;
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        }
        None => None,
    };
    let dns = match serve_dns(&node, &config).await {
        Ok(dns) => dns,
        Err(code) => {
            if let Some(server) = server {
                server.shutdown(Duration::ZERO).await;
            }
            return code;
        }
    };
    let status = match wait_for_listen_addrs(&node).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("starling: node stopped during start-up: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let http_text = server.as_ref().map_or_else(
        || "off".to_string(),
        |s| format!("{}://{}", s.scheme(), s.local_addr()),
    );
    let dns_text = dns
        .as_ref()
        .map_or_else(|| "off".to_string(), |d| d.local_addr().to_string());
    tracing::info!(
        listen = %status.listen_addrs.join(","),
        http = %http_text,
        dns = %dns_text,
        cluster = %status.cluster,
        "node ready"
    );
    println!(
        "starling ready node_id={} cluster={} listen={} http={} dns={}",
        status.node_id,
        status.cluster,
        status.listen_addrs.join(","),
        http_text,
        dns_text
    );
    let _ = std::io::stdout().flush();

    let mut reloader = Reloader::new(args, config);
    let mut poll = tokio::time::interval(CONFIG_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = hangups();
    let signal = loop {
        tokio::select! {
            signal = wait_for_signal() => break signal,
            () = next_hangup(&mut hangup) => {
                reloader.reload(&node, server.as_ref(), "SIGHUP").await;
            }
            _ = poll.tick() => {
                if reloader.file_changed() {
                    reloader.reload(&node, server.as_ref(), "config file changed").await;
                }
            }
        }
    };
    tracing::info!(%signal, "shutting down: announcing leave");
    // A second signal while leaving stops at once.
    let leave = async {
        let _ = node.shutdown().await;
        if let Some(server) = server {
            server.shutdown(HTTP_GRACE).await;
        }
        if let Some(dns) = dns {
            dns.shutdown().await;
        }
    };
    tokio::select! {
        () = leave => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        signal = wait_for_signal() => {
            tracing::warn!(%signal, "second signal: stopping without finishing the leave");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Start the DNS server if the config asks for one. A failure stops the
/// node and gives the exit code, with an error naming the address and
/// the flags that change it.
async fn serve_dns(node: &NodeHandle, config: &NodeConfig) -> Result<Option<dns::DnsServer>, ExitCode> {
    let options = match dns::DnsOptions::from_config(config) {
        Ok(Some(options)) => options,
        Ok(None) => return Ok(None),
        Err(e) => {
            eprintln!("starling: {e}");
            let _ = node.shutdown().await;
            return Err(ExitCode::from(EXIT_USAGE));
        }
    };
    let addr = options.addr;
    match dns::serve(node.clone(), options).await {
        Ok(server) => Ok(Some(server)),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve DNS");
            eprintln!(
                "starling: cannot serve DNS on {addr} (UDP and TCP): {e}; choose another address \
                 with --dns ADDR (config: dns), or turn DNS off with --no-dns (config: dns = \"off\")"
            );
            let _ = node.shutdown().await;
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// How often the config file is checked for changes. Polling the content
/// (rather than inotify) also catches editors that save by renaming a new
/// file over the old one and Kubernetes ConfigMap symlink swaps.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Hot reload: re-reads the config file (plus the command-line flags,
/// which keep overriding it), applies the reloadable settings, and keeps
/// the running config when the new one is invalid or changes a setting
/// that needs a restart.
struct Reloader {
    args: RunArgs,
    running: NodeConfig,
    /// The file's content when last looked at (`None`: unreadable).
    seen: Option<Vec<u8>>,
}

impl Reloader {
    fn new(args: RunArgs, running: NodeConfig) -> Self {
        let seen = args.config.as_ref().and_then(|p| std::fs::read(p).ok());
        Reloader { args, running, seen }
    }

    /// Whether the config file's content differs from when last seen.
    fn file_changed(&mut self) -> bool {
        let Some(path) = &self.args.config else {
            return false;
        };
        let now = std::fs::read(path).ok();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }

    async fn reload(&mut self, node: &NodeHandle, server: Option<&http::HttpServer>, why: &str) {
        if self.args.config.is_none() {
            tracing::info!(
                trigger = why,
                "reload asked for, but the node runs without a config file"
            );
            return;
        }
        let outcome = match self.args.to_config() {
            Ok(new) => self.running.reload_changes(&new).map(|changed| (new, changed)),
            Err(e) => Err(e.into()),
        };
        let (new, changed) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "config reload rejected; the running config stays in force");
                return;
            }
        };
        // Built again on every reload: a `secret_file` may have changed
        // while the config file did not.
        let access = match HttpAccess::from_config(&new) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "config reload rejected; the running config stays in force");
                return;
            }
        };
        // Re-read too: a renewed certificate at the same paths.
        if let Some(server) = server {
            match server.reload_tls().await {
                Ok(true) => tracing::info!(trigger = why, "HTTPS certificate and key re-read"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(trigger = why, error = %e, "HTTPS certificate not reloaded; the one in force stays")
                }
            }
        }
        let access_changed = server.is_some_and(|s| s.access() != access);
        let mut changed = changed;
        if access_changed && !changed.contains(&"http_tokens") {
            changed.push("http_tokens (secret files)");
        }
        if changed.is_empty() {
            tracing::info!(trigger = why, "config reloaded: no setting changed");
            return;
        }
        if changed.contains(&"log_level") {
            if let Err(e) = logging::set_filter(&new.log_level) {
                tracing::error!(trigger = why, error = %e, "config reload rejected; the running config stays in force");
                return;
            }
        }
        if let Err(e) = node.reload(&new).await {
            tracing::error!(trigger = why, error = %e, "config reload failed to apply");
            return;
        }
        if let Some(server) = server {
            server.set_rate_limit(new.http_rate_limit);
            if access_changed {
                server.set_access(access);
            }
        }
        tracing::info!(trigger = why, changed = %changed.join(","), "config reloaded");
        self.running = new;
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

/// SIGHUP listener (none where there are no signals).
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup()).ok()
    }
}

/// The next SIGHUP; never resolves without a listener.
#[cfg_attr(not(unix), allow(clippy::unused_async))]
async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(s) = hangups {
        s.recv().await;
        return;
    }
    let _ = hangups;
    std::future::pending::<()>().await;
}

/// The node's status once it listens somewhere (or after [`LISTEN_WAIT`]).
async fn wait_for_listen_addrs(node: &NodeHandle) -> Result<NodeStatus, crate::node::NodeError> {
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
    loop {
        let status = node.status().await?;
        if !status.listen_addrs.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait for SIGINT or SIGTERM; returns its name.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["starling", "run"];
        argv.extend_from_slice(flags);
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            Some(super::super::Command::Run(a)) => a,
            _ => unreachable!("parsed as run"),
        }
    }

    #[test]
    fn flags_override_the_file_and_tags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\nmdns = true\ntags = { role = \"gw\", zone = \"a\" }\n[protocol]\ncluster = \"filecluster\"\n",
        )
        .unwrap();
        let c = args(&[
            "--config",
            file.to_str().unwrap(),
            "--name",
            "from-flag",
            "--no-mdns",
            "--tag",
            "zone=b",
            "--http",
            "127.0.0.1:0",
            "--cluster",
            "flagcluster",
        ])
        .to_config()
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("from-flag"));
        assert!(!c.mdns);
        assert_eq!(c.tags.get("role").map(String::as_str), Some("gw"));
        assert_eq!(c.tags.get("zone").map(String::as_str), Some("b"));
        assert_eq!(c.protocol.cluster, "flagcluster");
        assert_eq!(c.http, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn an_invalid_flag_value_is_named_by_validation() {
        let err = args(&["--listen", "not-a-multiaddr"]).to_config().unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn dns_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "dns = \"127.0.0.1:5353\"\ndns_domain = \"disco.\"\n").unwrap();
        let path = file.to_str().unwrap();
        let c = args(&["--config", path]).to_config().unwrap();
        assert_eq!(c.dns, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(c.dns_domain, "disco.");
        let c = args(&["--config", path, "--dns", "127.0.0.1:0", "--dns-domain", "x."])
            .to_config()
            .unwrap();
        assert_eq!(c.dns, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.dns_domain, "x.");
        assert_eq!(
            args(&["--config", path, "--no-dns"]).to_config().unwrap().dns,
            None
        );
        let err = args(&["--dns-domain", "."]).to_config().unwrap_err();
        assert!(err.to_string().contains("dns_domain"), "{err}");
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(args(&[]).to_config().unwrap(), NodeConfig::default());
    }
}
