//! The `starling` command line: `starling run` starts a node, `starling
//! keygen` makes a cluster key file; every other subcommand is a client of
//! a node's HTTP API.
//!
//! Exit codes: 0 success, 1 the request (or the node) failed, 2 usage or
//! configuration error. `starling` with no subcommand is `starling run`.

mod client;
mod keygen;
mod logging;
mod run;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit code: the request or the node failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: bad arguments or configuration.
const EXIT_USAGE: u8 = 2;

/// A leaderless coordination node: config, service discovery and membership.
#[derive(Debug, Parser)]
#[command(name = "starling", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the flags of `starling run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default when no subcommand is given).
    Run(RunArgs),
    /// Config keys: get, put, delete, list, watch, history, rollback.
    Kv(client::KvArgs),
    /// Service instances: register, heartbeat, list, watch, deregister.
    Services(client::ServicesArgs),
    /// Writer rules: which nodes may write which namespaces (show, set,
    /// clear; changing them needs an admin node, see protocol.acl_admins).
    Acl(client::AclArgs),
    /// The cluster's members as this node sees them.
    Members(client::ClientOpts),
    /// This node's status.
    Status(client::ClientOpts),
    /// Make a cluster key file (copy it to every node, start each with
    /// --cluster-key FILE).
    Keygen(keygen::KeygenArgs),
}

/// `starling run`: flags override the config file, which overrides defaults.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct RunArgs {
    /// TOML config file (every flag below can also be set there).
    #[arg(long, value_name = "FILE.toml", env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (state and the node's identity).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// libp2p listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// HTTP API address, e.g. 127.0.0.1:7070 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Do not serve the HTTP API.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,
    /// Peer to dial at start (repeatable), ideally ending in /p2p/<id>.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Cluster name: nodes of different clusters never merge state.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Node name (default: the host name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Node tag (repeatable), e.g. --tag role=gateway.
    #[arg(long = "tag", value_name = "K=V", value_parser = parse_key_value)]
    tags: Vec<(String, String)>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Log line format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    /// Log filter, e.g. info or starling=debug,libp2p=warn.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Cluster key file (from `starling keygen`): only nodes with the same
    /// key can connect.
    #[arg(long = "cluster-key", value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// DNS server address for service discovery, UDP and TCP
    /// (default 127.0.0.1:8600; port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    dns: Option<std::net::SocketAddr>,
    /// Do not serve DNS.
    #[arg(long, conflicts_with = "dns")]
    no_dns: bool,
    /// The DNS domain answered for (default starling.).
    #[arg(long, value_name = "DOMAIN")]
    dns_domain: Option<String>,
    /// Directory of service files (one TOML file per instance, with its
    /// health checks) that this node registers and keeps in step.
    #[arg(long = "services-dir", value_name = "DIR")]
    services_dir: Option<PathBuf>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parse `k=v`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Run the `starling` binary with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version print to stdout and exit 0; errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Kv(args)) => client::kv(args),
        Some(Command::Services(args)) => client::services(args),
        Some(Command::Acl(args)) => client::acl(args),
        Some(Command::Members(opts)) => client::members(opts),
        Some(Command::Status(opts)) => client::status(opts),
        Some(Command::Keygen(args)) => keygen::keygen(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_its_flags() {
        let cli = Cli::try_parse_from(["starling", "--no-mdns", "--tag", "a=b"]).unwrap();
        assert!(cli.command.is_none());
        assert!(cli.run.no_mdns);
        assert_eq!(cli.run.tags, vec![("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn malformed_tag_is_a_usage_error() {
        let err = Cli::try_parse_from(["starling", "run", "--tag", "nokey"]).unwrap_err();
        assert!(err.use_stderr());
        assert_eq!(err.exit_code(), 2);
    }
}
