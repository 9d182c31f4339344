//! Client subcommands: talk to a node's HTTP API, print tables or JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{parse_key_value, table, EXIT_FAILED, EXIT_USAGE};
use crate::core::{HealthStatus, ServiceSpec};
use crate::http::api;

/// Most bytes of one answer the client reads (lists can be large).
const MAX_RESPONSE_BYTES: u64 = 512 << 20;
/// Time limit of one ordinary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Options every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientOpts {
    /// The node's HTTP API address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:7070",
        env = "STARLING_HTTP"
    )]
    http: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Bearer token of the node's HTTP API (one of its [[http_tokens]]).
    #[arg(long, value_name = "SECRET", env = "STARLING_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file (surrounding whitespace
    /// ignored); wins over --token and STARLING_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA (or self-signed certificate) to trust for an
    /// https:// node address.
    #[arg(long, value_name = "FILE.pem", env = "STARLING_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

impl ClientOpts {
    /// The token to send, from --token-file, else --token or
    /// STARLING_TOKEN.
    fn token(&self) -> Result<Option<String>, Failure> {
        let token = match (&self.token_file, &self.token) {
            (None, Some(t)) => t.trim().to_string(),
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read --token-file {}: {e}", path.display())))?
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::usage(
                "the token is empty or has spaces or control characters",
            ));
        }
        Ok(Some(token))
    }
}

/// `starling kv`.
#[derive(Debug, Args)]
pub(crate) struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Print a key's value (exactly its bytes with --raw).
    Get {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Write the stored bytes as they are, with no newline.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Write a value: VALUE, `-` for stdin, or --file.
    Put {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The value; `-` reads stdin.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Write only if the current version is this one (or `absent`).
        #[arg(long, value_name = "VERSION")]
        cas: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a key.
    Delete {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Delete only if the current version is this one.
        #[arg(long, value_name = "VERSION")]
        cas: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List keys.
    List {
        /// Namespace.
        namespace: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Stream changes until interrupted.
    Watch {
        /// Namespace.
        namespace: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Replay the changes after this revision first.
        #[arg(long)]
        since: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every version held for a key.
    History {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Write an earlier version's content again, as a new version.
    Rollback {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The version to restore (16 hex digits, from `kv history`).
        version: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Gray rollout: serve a candidate value to some nodes first.
    Canary {
        #[command(subcommand)]
        command: CanaryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CanaryCommand {
    /// Start (or replace) a key's canary: nodes matching --selector and/or
    /// --percent read VALUE, every other node the stable value.
    Set {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The candidate value; `-` reads stdin.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Node tags that must all match, e.g. `role=gateway,region=eu`.
        #[arg(long, value_name = "TAGS", default_value = "")]
        selector: String,
        /// Share of nodes (1-100), picked by a stable hash of the node id.
        #[arg(long, value_name = "PERCENT")]
        percent: Option<u8>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show one key's canary, or every canary of a namespace.
    Show {
        /// Namespace.
        namespace: String,
        /// Key (all canaries of the namespace if omitted).
        key: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Make the canary value the stable value on every node.
    Promote {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// End the canary; every node reads the stable value again.
    Abort {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `starling services`.
#[derive(Debug, Args)]
pub(crate) struct ServicesArgs {
    #[command(subcommand)]
    command: ServicesCommand,
}

#[derive(Debug, Subcommand)]
enum ServicesCommand {
    /// Register (or update) an instance owned by the node.
    Register {
        /// Namespace.
        namespace: String,
        /// Service.
        service: String,
        /// Instance id.
        instance: String,
        /// Address the instance serves on.
        #[arg(long)]
        address: String,
        /// Port.
        #[arg(long)]
        port: u16,
        /// Tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Metadata entry (repeatable), k=v.
        #[arg(long = "meta", value_name = "K=V", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
        /// Routing weight 0-100.
        #[arg(long, default_value_t = 100)]
        weight: u8,
        /// Turn critical without a heartbeat for this long.
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[command(flatten)]
        checks: CheckArgs,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Refresh an instance's TTL and report its health.
    Heartbeat {
        /// Namespace.
        namespace: String,
        /// Service.
        service: String,
        /// Instance id.
        instance: String,
        /// passing, warning or critical.
        #[arg(long, default_value = "passing")]
        health: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List a service's instances, or the services of a namespace.
    List {
        /// Namespace.
        namespace: String,
        /// Service (omit to list service names).
        service: Option<String>,
        /// Only instances with this tag (repeatable: all of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only healthy instances.
        #[arg(long)]
        healthy: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Stream instance changes until interrupted.
    Watch {
        /// Namespace.
        namespace: String,
        /// Service (omit for every service of the namespace).
        service: Option<String>,
        /// Replay the changes after this revision first.
        #[arg(long)]
        since: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The health checks the node runs for its instances of a namespace:
    /// status, runs in a row, last output.
    Checks {
        /// Namespace.
        namespace: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove an instance.
    Deregister {
        /// Namespace.
        namespace: String,
        /// Service.
        service: String,
        /// Instance id.
        instance: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// Health checks of `services register`, run by the node.
#[derive(Debug, Args)]
struct CheckArgs {
    /// HTTP check: GET this URL (repeatable); 2xx passes, 429 warns.
    #[arg(long = "check-http", value_name = "URL")]
    check_http: Vec<String>,
    /// TCP check: connect to HOST:PORT (repeatable).
    #[arg(long = "check-tcp", value_name = "HOST:PORT")]
    check_tcp: Vec<String>,
    /// Command check: a program and its arguments separated by spaces, run
    /// without a shell (repeatable); exit 0 passes, 1 warns. For arguments
    /// with spaces use --check.
    #[arg(long = "check-command", value_name = "CMD")]
    check_command: Vec<String>,
    /// A check as JSON (repeatable), every field available, e.g.
    /// '{"command":["sh","-c","exit 0"],"interval_ms":5000,"failures_before_critical":3}'.
    #[arg(long = "check", value_name = "JSON")]
    check_json: Vec<String>,
    /// Interval of the --check-http, --check-tcp and --check-command checks, ms.
    #[arg(long, default_value_t = 10_000)]
    check_interval_ms: u64,
    /// Timeout of those checks, ms.
    #[arg(long, default_value_t = 2_000)]
    check_timeout_ms: u64,
}

impl CheckArgs {
    /// The checks, in the order: JSON, HTTP, TCP, command.
    fn to_checks(&self) -> Result<Vec<api::CheckSpec>, Failure> {
        let mut out = Vec::new();
        for j in &self.check_json {
            let c: api::CheckSpec = serde_json::from_str(j)
                .map_err(|e| Failure::usage(format!("--check {j:?} is not a check: {e}")))?;
            out.push(c);
        }
        let timing = |c: api::CheckSpec| {
            c.with_interval_ms(self.check_interval_ms)
                .with_timeout_ms(self.check_timeout_ms)
        };
        out.extend(self.check_http.iter().map(|u| timing(api::CheckSpec::http(u))));
        out.extend(self.check_tcp.iter().map(|a| timing(api::CheckSpec::tcp(a))));
        for cmd in &self.check_command {
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            if argv.is_empty() {
                return Err(Failure::usage("--check-command needs a program"));
            }
            out.push(timing(api::CheckSpec::command(argv)));
        }
        for (i, c) in out.iter().enumerate() {
            c.validate()
                .map_err(|e| Failure::usage(format!("check {}: {e}", i + 1)))?;
        }
        Ok(out)
    }
}

/// A failed command: what to print and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn request(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_FAILED,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }
}

type Outcome = Result<(), Failure>;

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("starling: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A node's API.
struct Api {
    base: String,
    agent: ureq::Agent,
}

/// A response read whole.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The body as the API type `T`.
    fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Failure::request(format!("the node answered with invalid JSON: {e}")))
    }
}

impl Api {
    fn new(opts: &ClientOpts, timeout: Option<Duration>) -> Result<Self, Failure> {
        let base = if opts.http.contains("://") {
            opts.http.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", opts.http.trim_end_matches('/'))
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .timeout_connect(Some(Duration::from_secs(5)));
        config = with_tls(config, opts)?;
        if let Some(token) = opts.token()? {
            let value = ureq::http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Failure::usage("the token is not a valid header value"))?;
            config = config.middleware(
                move |mut req: ureq::http::Request<ureq::SendBody>,
                      next: ureq::middleware::MiddlewareNext| {
                    req.headers_mut()
                        .insert(ureq::http::header::AUTHORIZATION, value.clone());
                    next.handle(req)
                },
            );
        }
        Ok(Api {
            base,
            agent: config.build().into(),
        })
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = self.base.clone();
        for s in segments {
            url.push('/');
            url.push_str(&encode_path(s));
        }
        url
    }

    fn connect_error(&self, e: ureq::Error) -> Failure {
        Failure::request(format!("cannot reach the node at {}: {e}", self.base))
    }

    fn read(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, Failure> {
        let mut response = response.map_err(|e| self.connect_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| Failure::request(format!("reading the answer: {e}")))?;
        let answer = Answer { status, body };
        if !(200..300).contains(&status) {
            return Err(server_error(&answer));
        }
        Ok(answer)
    }

    fn get(&self, url: &str, query: &[(&str, String)]) -> Result<Answer, Failure> {
        let mut req = self.agent.get(url);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.read(req.call())
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        query: &[(&str, String)],
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Answer, Failure> {
        let mut req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.read(req.content_type(content_type).send(body))
    }

    fn delete(&self, url: &str, query: &[(&str, String)]) -> Result<Answer, Failure> {
        let mut req = self.agent.delete(url);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.read(req.call())
    }
}

/// An agent's configuration being built.
type AgentConfig = ureq::config::ConfigBuilder<ureq::typestate::AgentScope>;

/// The TLS settings for an https:// node: rustls, trusting `--ca-cert`
/// (or the web PKI roots without it).
#[cfg(feature = "tls")]
fn with_tls(config: AgentConfig, opts: &ClientOpts) -> Result<AgentConfig, Failure> {
    use std::sync::Arc;
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    if let Some(path) = &opts.ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read --ca-cert {}: {e}", path.display())))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(Failure::usage(format!(
                "--ca-cert {}: no PEM certificate in it",
                path.display()
            )));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(config.tls_config(tls.build()))
}

/// Without the `tls` feature the client speaks plain HTTP only.
#[cfg(not(feature = "tls"))]
fn with_tls(config: AgentConfig, opts: &ClientOpts) -> Result<AgentConfig, Failure> {
    if opts.ca_cert.is_some() || opts.http.starts_with("https://") {
        return Err(Failure::usage(
            "this build has no TLS support (cargo feature `tls`)",
        ));
    }
    Ok(config)
}

/// `starling: 404 not_found: key prod/x not found`.
fn server_error(answer: &Answer) -> Failure {
    let parsed: Option<api::ErrorBody> = serde_json::from_slice(&answer.body).ok();
    let message = match parsed {
        Some(e) => {
            let mut m = format!("{} {}: {}", answer.status, e.code, e.error);
            if let Some(current) = e.current_version {
                m.push_str(&format!(
                    " (current version: {})",
                    current.map_or_else(|| "none".to_string(), |v| v.to_string())
                ));
            }
            match answer.status {
                401 => m.push_str(
                    "\n  hint: the node requires a token: pass --token, --token-file or set STARLING_TOKEN",
                ),
                403 if e.code == "forbidden" => m.push_str(
                    "\n  hint: use a token whose role and namespaces cover this request (see the node's [[http_tokens]])",
                ),
                403 if e.code == "bad_host" => m.push_str(
                    "\n  hint: address the node by a loopback address, its bound address, or a name in its http_allowed_hosts",
                ),
                _ => {}
            }
            m
        }
        _ => format!(
            "{} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body).trim()
        ),
    };
    Failure::request(message)
}

/// Percent-encode a path segment, keeping `/` (keys are `/`-separated).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Print an answer as indented JSON, keys in alphabetical order.
fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(&json_value(v)).expect("a JSON value always serializes")
    );
}

/// An API value as a JSON tree (objects sorted by key).
fn json_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("API types are plain data and always serialize")
}

/// `starling kv ...`.
pub(crate) fn kv(args: KvArgs) -> ExitCode {
    finish(match args.command {
        KvCommand::Get {
            namespace,
            key,
            raw,
            opts,
        } => kv_get(&opts, &namespace, &key, raw),
        KvCommand::Put {
            namespace,
            key,
            value,
            file,
            cas,
            opts,
        } => read_value(value, file).and_then(|bytes| kv_put(&opts, &namespace, &key, bytes, cas)),
        KvCommand::Delete {
            namespace,
            key,
            cas,
            opts,
        } => {
            let api = match Api::new(&opts, Some(REQUEST_TIMEOUT)) {
                Ok(api) => api,
                Err(f) => return finish(Err(f)),
            };
            let query: Vec<(&str, String)> = cas.into_iter().map(|c| ("cas", c)).collect();
            api.delete(&api.url(&["v1", "kv", &namespace, &key]), &query)
                .and_then(|a| a.json())
                .map(|v| print_written(&opts, "deleted", &v))
        }
        KvCommand::List {
            namespace,
            prefix,
            limit,
            opts,
        } => kv_list(&opts, &namespace, &prefix, limit),
        KvCommand::Watch {
            namespace,
            prefix,
            since,
            opts,
        } => {
            let mut query = vec![("prefix", prefix)];
            query.extend(since.map(|s| ("since", s.to_string())));
            watch(&opts, &["v1", "watch", "kv", &namespace], &query)
        }
        KvCommand::History { namespace, key, opts } => kv_history(&opts, &namespace, &key),
        KvCommand::Rollback {
            namespace,
            key,
            version,
            opts,
        } => {
            let api = match Api::new(&opts, Some(REQUEST_TIMEOUT)) {
                Ok(api) => api,
                Err(f) => return finish(Err(f)),
            };
            let body = api::VersionRequest {
                version: Some(version),
                value: None,
            };
            let body = serde_json::to_vec(&body).expect("a request body always serializes");
            api.send(
                "POST",
                &format!("{}/rollback", api.url(&["v1", "kv", &namespace, &key])),
                &[],
                body,
                "application/json",
            )
            .and_then(|a| a.json())
            .map(|v| print_written(&opts, "rolled back; new version", &v))
        }
        KvCommand::Canary { command } => canary(command),
    })
}

fn canary(command: CanaryCommand) -> Outcome {
    match command {
        CanaryCommand::Set {
            namespace,
            key,
            value,
            file,
            selector,
            percent,
            opts,
        } => {
            let bytes = read_value(value, file)?;
            let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
            let mut query = vec![("selector", selector)];
            query.extend(percent.map(|p| ("percent", p.to_string())));
            let url = api.url(&["v1", "canary", &namespace, &key]);
            let v = api
                .send("PUT", &url, &query, bytes, "application/octet-stream")?
                .json()?;
            print_written(&opts, "canary version", &v);
            Ok(())
        }
        CanaryCommand::Show { namespace, key, opts } => {
            let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
            let list: Vec<api::Canary> = match &key {
                Some(key) => {
                    let one: api::Canary = api
                        .get(&api.url(&["v1", "canary", &namespace, key]), &[])?
                        .json()?;
                    if opts.json {
                        print_json(&one);
                        return Ok(());
                    }
                    vec![one]
                }
                None => {
                    let all: api::CanaryList =
                        api.get(&api.url(&["v1", "canary", &namespace]), &[])?.json()?;
                    if opts.json {
                        print_json(&all);
                        return Ok(());
                    }
                    all.canaries
                }
            };
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.key.clone(),
                        value_cell(&c.content),
                        c.target.clone(),
                        if c.active_here { "yes" } else { "no" }.to_string(),
                        c.version.id.to_string(),
                    ]
                })
                .collect();
            table::print(&["KEY", "CANARY VALUE", "TARGET", "HERE", "VERSION"], &rows);
            Ok(())
        }
        CanaryCommand::Promote { namespace, key, opts } => {
            canary_action(&opts, &namespace, &key, "promote", "promoted; stable version")
        }
        CanaryCommand::Abort { namespace, key, opts } => {
            canary_action(&opts, &namespace, &key, "abort", "aborted")
        }
    }
}

fn canary_action(opts: &ClientOpts, ns: &str, key: &str, action: &str, what: &str) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let url = format!("{}/{action}", api.url(&["v1", "canary", ns, key]));
    let v = api
        .send("POST", &url, &[], Vec::new(), "application/json")?
        .json()?;
    print_written(opts, what, &v);
    Ok(())
}

fn read_value(value: Option<String>, file: Option<PathBuf>) -> Result<Vec<u8>, Failure> {
    match (value, file) {
        (_, Some(path)) => {
            std::fs::read(&path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
        }
        (Some(v), None) if v == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            Ok(buf)
        }
        (Some(v), None) => Ok(v.into_bytes()),
        (None, None) => Err(Failure::usage("give a VALUE, `-` for stdin, or --file")),
    }
}

fn print_written(opts: &ClientOpts, what: &str, w: &api::WriteResponse) {
    if opts.json {
        print_json(w);
    } else {
        println!("{what} {}", w.version);
    }
}

fn kv_get(opts: &ClientOpts, ns: &str, key: &str, raw: bool) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let url = api.url(&["v1", "kv", ns, key]);
    // `?literal` so that a key ending in `/history` reads as itself.
    let mut query = vec![("literal", "true".to_string())];
    if raw {
        query.push(("raw", "true".into()));
        let answer = api.get(&url, &query)?;
        let mut out = std::io::stdout().lock();
        return out
            .write_all(&answer.body)
            .and_then(|()| out.flush())
            .map_err(|e| Failure::request(format!("writing the value: {e}")));
    }
    let e: api::KvEntry = api.get(&url, &query)?.json()?;
    if opts.json {
        print_json(&e);
        return Ok(());
    }
    let siblings = e.siblings.len();
    if siblings > 1 {
        eprintln!("starling: {siblings} concurrent versions; showing the winner (see --json)");
    }
    if e.source == api::Source::Canary {
        eprintln!(
            "starling: this node reads the canary value (target: {}); `kv canary show` for details",
            e.canary.as_ref().map_or("?", |c| c.target.as_str())
        );
    }
    let mut out = std::io::stdout().lock();
    let bytes = e
        .content
        .bytes()
        .map_err(|e| Failure::request(format!("bad base64 from the node: {e}")))?
        .unwrap_or_default();
    let newline = !bytes.ends_with(b"\n") && e.content.value.is_some();
    out.write_all(&bytes)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush())
        .map_err(|e| Failure::request(format!("writing the value: {e}")))
}

fn kv_put(opts: &ClientOpts, ns: &str, key: &str, value: Vec<u8>, cas: Option<String>) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let query: Vec<(&str, String)> = cas.into_iter().map(|c| ("cas", c)).collect();
    let v: api::WriteResponse = api
        .send(
            "PUT",
            &api.url(&["v1", "kv", ns, key]),
            &query,
            value,
            "application/octet-stream",
        )?
        .json()?;
    print_written(opts, "version", &v);
    Ok(())
}

fn value_cell(c: &api::Content) -> String {
    match (&c.value, &c.value_base64) {
        (Some(text), _) => table::clip(text, 40),
        (None, Some(_)) => "(binary)".into(),
        (None, None) => "(deleted)".into(),
    }
}

fn kv_list(opts: &ClientOpts, ns: &str, prefix: &str, limit: Option<u64>) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let mut query = vec![("prefix", prefix.to_string())];
    query.extend(limit.map(|l| ("limit", l.to_string())));
    let list: api::KvList = api.get(&api.url(&["v1", "kv", ns]), &query)?.json()?;
    if opts.json {
        print_json(&list);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .entries
        .iter()
        .map(|e| {
            vec![
                e.key.clone(),
                e.version.id.to_string(),
                e.version.size.to_string(),
                value_cell(&e.content),
            ]
        })
        .collect();
    table::print(&["KEY", "VERSION", "SIZE", "VALUE"], &rows);
    if list.truncated {
        eprintln!("starling: more keys match; raise --limit");
    }
    Ok(())
}

fn kv_history(opts: &ClientOpts, ns: &str, key: &str) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let history: api::History = api
        .get(&format!("{}/history", api.url(&["v1", "kv", ns, key])), &[])?
        .json()?;
    if opts.json {
        print_json(&history);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = history
        .versions
        .iter()
        .map(|e| {
            let ver = &e.version;
            vec![
                ver.id.to_string(),
                if e.live { "live" } else { "" }.to_string(),
                ver.hlc.wall_ms.to_string(),
                table::clip(&ver.origin, 16),
                ver.size.to_string(),
                if ver.deleted {
                    "(deleted)".into()
                } else {
                    value_cell(&e.content)
                },
            ]
        })
        .collect();
    table::print(&["VERSION", "LIVE", "HLC_MS", "ORIGIN", "SIZE", "VALUE"], &rows);
    Ok(())
}

/// Follow a server-sent event stream, printing each event, until the
/// stream ends or the process is interrupted.
fn watch(opts: &ClientOpts, path: &[&str], query: &[(&str, String)]) -> Outcome {
    let api = Api::new(opts, None)?;
    let mut req = api
        .agent
        .get(&api.url(path))
        .header("accept", "text/event-stream");
    for (k, v) in query {
        req = req.query(k, v);
    }
    let response = req.call().map_err(|e| api.connect_error(e))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let mut body = Vec::new();
        let _ = response
            .into_body()
            .into_reader()
            .take(1 << 20)
            .read_to_end(&mut body);
        return Err(server_error(&Answer { status, body }));
    }
    let reader = BufReader::new(response.into_body().into_reader());
    let (mut event, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::request(format!("watch stream broke: {e}")))?;
        if line.is_empty() {
            if !data.is_empty() {
                print_event(opts, &event, &data)?;
            }
            event.clear();
            data.clear();
        } else if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = rest.trim().to_string();
        }
    }
    Err(Failure::request("the node closed the watch stream"))
}

fn print_event(opts: &ClientOpts, event: &str, data: &str) -> Outcome {
    if event == "error" {
        let error: api::ErrorBody = serde_json::from_str(data)
            .map_err(|e| Failure::request(format!("bad event from the node: {e}")))?;
        return Err(Failure::request(format!("watch ended: {}", error.error)));
    }
    let line = match serde_json::from_str::<api::WatchEvent>(data) {
        Ok(change) if opts.json => json_value(&change).to_string(),
        Ok(change) => event_line(&change),
        // A kind of change this client does not know: show it as it came.
        Err(_) => serde_json::from_str::<Value>(data)
            .map_err(|e| Failure::request(format!("bad event from the node: {e}")))?
            .to_string(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::request(format!("writing output: {e}")))
}

/// One watch event as a line of text.
fn event_line(change: &api::WatchEvent) -> String {
    let rev = change.revision();
    match change {
        api::WatchEvent::Kv {
            deleted: true, key, ..
        } => format!("{rev} delete {key}"),
        api::WatchEvent::Kv {
            key,
            content,
            version,
            ..
        } => format!(
            "{rev} put {key} = {} ({})",
            value_cell(content),
            version.as_ref().map(|v| v.id.to_string()).unwrap_or_default()
        ),
        api::WatchEvent::Service {
            service,
            instance,
            view: Some(view),
            deleted: false,
            ..
        } => format!(
            "{rev} {} {service}/{instance} {}:{}",
            view.health.as_str(),
            view.address,
            view.port
        ),
        api::WatchEvent::Service {
            service, instance, ..
        } => format!("{rev} deregister {service}/{instance}"),
        api::WatchEvent::Member { .. } => json_value(change).to_string(),
    }
}

/// `starling services ...`.
pub(crate) fn services(args: ServicesArgs) -> ExitCode {
    finish(match args.command {
        ServicesCommand::Register {
            namespace,
            service,
            instance,
            address,
            port,
            tags,
            metadata,
            weight,
            ttl_ms,
            checks,
            opts,
        } => {
            let checks = match checks.to_checks() {
                Ok(c) => c,
                Err(f) => return finish(Err(f)),
            };
            let api = match Api::new(&opts, Some(REQUEST_TIMEOUT)) {
                Ok(api) => api,
                Err(f) => return finish(Err(f)),
            };
            let spec = api::RegisterRequest {
                spec: ServiceSpec {
                    address,
                    port,
                    tags: tags.into_iter().collect(),
                    metadata: metadata.into_iter().collect(),
                    weight,
                    ttl_ms,
                },
                checks,
            };
            api.send(
                "PUT",
                &api.url(&["v1", "services", &namespace, &service, &instance]),
                &[],
                serde_json::to_vec(&spec).expect("a request body always serializes"),
                "application/json",
            )
            .and_then(|a| a.json())
            .map(|v| print_written(&opts, "registered; version", &v))
        }
        ServicesCommand::Heartbeat {
            namespace,
            service,
            instance,
            health,
            opts,
        } => {
            let health = HealthStatus::parse(&health).ok_or_else(|| {
                Failure::usage(format!(
                    "--health must be passing, warning or critical, got {health:?}"
                ))
            });
            let api = match Api::new(&opts, Some(REQUEST_TIMEOUT)) {
                Ok(api) => api,
                Err(f) => return finish(Err(f)),
            };
            health
                .and_then(|health| {
                    let body = api::HeartbeatRequest { health: Some(health) };
                    api.send(
                        "PUT",
                        &api.url(&["v1", "services", &namespace, &service, &instance, "heartbeat"]),
                        &[],
                        serde_json::to_vec(&body).expect("a request body always serializes"),
                        "application/json",
                    )
                })
                .and_then(|a| a.json())
                .map(|r: api::HeartbeatResponse| {
                    if opts.json {
                        print_json(&r);
                    } else {
                        println!("{}", r.health.as_str());
                    }
                })
        }
        ServicesCommand::List {
            namespace,
            service,
            tags,
            healthy,
            opts,
        } => services_list(&opts, &namespace, service.as_deref(), tags, healthy),
        ServicesCommand::Watch {
            namespace,
            service,
            since,
            opts,
        } => {
            let mut path = vec!["v1", "watch", "services", namespace.as_str()];
            path.extend(service.as_deref());
            let query: Vec<(&str, String)> = since.into_iter().map(|s| ("since", s.to_string())).collect();
            watch(&opts, &path, &query)
        }
        ServicesCommand::Checks { namespace, opts } => services_checks(&opts, &namespace),
        ServicesCommand::Deregister {
            namespace,
            service,
            instance,
            opts,
        } => {
            let api = match Api::new(&opts, Some(REQUEST_TIMEOUT)) {
                Ok(api) => api,
                Err(f) => return finish(Err(f)),
            };
            api.delete(
                &api.url(&["v1", "services", &namespace, &service, &instance]),
                &[],
            )
            .and_then(|a| a.json())
            .map(|v| print_written(&opts, "deregistered; version", &v))
        }
    })
}

fn services_list(
    opts: &ClientOpts,
    ns: &str,
    service: Option<&str>,
    tags: Vec<String>,
    healthy: bool,
) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let Some(service) = service else {
        let names: api::ServiceNames = api.get(&api.url(&["v1", "services", ns]), &[])?.json()?;
        if opts.json {
            print_json(&names);
        } else {
            for name in &names.services {
                println!("{name}");
            }
        }
        return Ok(());
    };
    let mut query: Vec<(&str, String)> = tags.into_iter().map(|t| ("tag", t)).collect();
    if healthy {
        query.push(("healthy", "true".into()));
    }
    let list: api::ServiceList = api
        .get(&api.url(&["v1", "services", ns, service]), &query)?
        .json()?;
    if opts.json {
        print_json(&list);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .instances
        .iter()
        .map(|i| {
            vec![
                i.instance.clone(),
                format!("{}:{}", i.address, i.port),
                i.health.as_str().to_string(),
                i.weight.to_string(),
                i.tags.iter().map(String::as_str).collect::<Vec<_>>().join(","),
                table::clip(&i.owner, 16),
            ]
        })
        .collect();
    table::print(
        &["INSTANCE", "ADDRESS", "HEALTH", "WEIGHT", "TAGS", "OWNER"],
        &rows,
    );
    Ok(())
}

/// `starling services checks NS`.
fn services_checks(opts: &ClientOpts, ns: &str) -> Outcome {
    let api = Api::new(opts, Some(REQUEST_TIMEOUT))?;
    let list: api::CheckList = api.get(&api.url(&["v1", "checks", ns]), &[])?.json()?;
    if opts.json {
        print_json(&list);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .checks
        .iter()
        .map(|c| {
            vec![
                format!("{}/{}", c.service, c.instance),
                c.name.clone(),
                c.status.map_or("pending", |s| s.as_str()).to_string(),
                format!("{}/{}", c.consecutive_successes, c.consecutive_failures),
                table::clip(&c.output, 60),
            ]
        })
        .collect();
    table::print(&["INSTANCE", "CHECK", "STATUS", "OK/FAIL", "OUTPUT"], &rows);
    Ok(())
}

/// `starling members`.
pub(crate) fn members(opts: ClientOpts) -> ExitCode {
    finish((|| {
        let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
        let members: Vec<api::Member> = api.get(&api.url(&["v1", "members"]), &[])?.json()?;
        if opts.json {
            print_json(&members);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    m.name.clone(),
                    m.node_id.clone(),
                    m.status.as_str().to_string(),
                    m.incarnation.to_string(),
                    tags.join(","),
                ]
            })
            .collect();
        table::print(&["NAME", "NODE_ID", "STATUS", "INCARNATION", "TAGS"], &rows);
        Ok(())
    })())
}

/// `starling acl`.
#[derive(Debug, Args)]
pub(crate) struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Show the admins and every namespace's writers (or one namespace's).
    Show {
        /// Namespace (every rule if omitted).
        namespace: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Make these nodes the only writers of a namespace from now on (the
    /// node asked must be an admin). Nodes that wrote it before keep what
    /// they wrote.
    Set {
        /// Namespace.
        namespace: String,
        /// A writer's node id (12D3KooW..., as `starling members` shows);
        /// repeatable. None: nobody may write the namespace any more.
        #[arg(long = "writer", value_name = "NODE_ID")]
        writers: Vec<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a namespace's writer rule: every member may write it again.
    Clear {
        /// Namespace.
        namespace: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `starling acl`.
pub(crate) fn acl(args: AclArgs) -> ExitCode {
    finish((|| match args.command {
        AclCommand::Show { namespace, opts } => {
            let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
            let view: crate::node::AclView = api.get(&api.url(&["v1", "acl"]), &[])?.json()?;
            let rules: Vec<(&String, &Vec<crate::node::WriterView>)> = view
                .rules
                .iter()
                .filter(|(ns, _)| namespace.as_ref().is_none_or(|want| want == *ns))
                .collect();
            if opts.json {
                match &namespace {
                    Some(ns) => print_json(&view.rules.get(ns)),
                    None => print_json(&view),
                }
                return Ok(());
            }
            if namespace.is_none() {
                let admins = if view.admins.is_empty() {
                    "(none: protocol.acl_admins is empty)".to_string()
                } else {
                    view.admins.join(", ")
                };
                println!("admins: {admins}");
            }
            if rules.is_empty() {
                match &namespace {
                    Some(ns) => println!("namespace {ns} has no writer rule: every member may write it"),
                    None => println!("no writer rules: every namespace is open to every member"),
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rules
                .iter()
                .flat_map(|(ns, writers)| {
                    writers.iter().map(move |w| {
                        vec![
                            ns.to_string(),
                            w.node_id.clone(),
                            w.until_seq.map_or("-".into(), |s| format!("up to seq {s}")),
                        ]
                    })
                })
                .collect();
            table::print(&["NAMESPACE", "WRITER", "BOUND"], &rows);
            Ok(())
        }
        AclCommand::Set {
            namespace,
            writers,
            opts,
        } => {
            let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
            let body = serde_json::to_vec(&serde_json::json!({ "writers": writers }))
                .map_err(|e| Failure::request(e.to_string()))?;
            let w: api::WriteResponse = api
                .send(
                    "PUT",
                    &api.url(&["v1", "acl", &namespace]),
                    &[],
                    body,
                    "application/json",
                )?
                .json()?;
            print_written(&opts, "writer rule written; version", &w);
            Ok(())
        }
        AclCommand::Clear { namespace, opts } => {
            let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
            let w: api::WriteResponse = api.delete(&api.url(&["v1", "acl", &namespace]), &[])?.json()?;
            print_written(&opts, "writer rule removed; version", &w);
            Ok(())
        }
    })())
}

/// `starling status`.
pub(crate) fn status(opts: ClientOpts) -> ExitCode {
    finish((|| {
        let api = Api::new(&opts, Some(REQUEST_TIMEOUT))?;
        let s: api::Status = api.get(&api.url(&["v1", "health"]), &[])?.json()?;
        if opts.json {
            print_json(&s);
            return Ok(());
        }
        let members: Vec<String> = s.members.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let rows = [
            ("node id", s.node_id.clone()),
            ("name", s.name.clone()),
            ("cluster", s.cluster.clone()),
            ("revision", s.revision.to_string()),
            ("keys", s.keys.to_string()),
            ("digest", s.digest.clone()),
            ("members", members.join(", ")),
            ("connected peers", s.connected_peers.to_string()),
        ];
        for (k, val) in rows {
            println!("{k:<16} {val}");
        }
        for a in &s.listen_addrs {
            println!("{:<16} {a}", "listen");
        }
        Ok(())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode_path("a/b c?d"), "a/b%20c%3Fd");
        assert_eq!(encode_path("routes/v1.json"), "routes/v1.json");
    }

    #[test]
    fn server_errors_show_status_code_and_message() {
        let f = server_error(&Answer {
            status: 409,
            body: br#"{"error":"version conflict","code":"conflict","current_version":"00000000000000ab"}"#
                .to_vec(),
        });
        assert_eq!(f.code, EXIT_FAILED);
        assert!(
            f.message.contains("409 conflict: version conflict"),
            "{}",
            f.message
        );
        assert!(f.message.contains("00000000000000ab"), "{}", f.message);
    }
}
