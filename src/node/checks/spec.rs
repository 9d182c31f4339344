//! What a health check is: its definition as clients write it
//! ([`CheckSpec`], JSON in the HTTP API, TOML in service files) and the
//! parsed form the runner uses ([`Probe`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most checks on one instance.
pub const MAX_CHECKS_PER_INSTANCE: usize = 16;
/// Longest check name, URL, TCP address or command argument, in bytes.
pub const MAX_CHECK_FIELD_LEN: usize = 1024;
/// Most arguments of a command check (the program included).
pub const MAX_COMMAND_ARGS: usize = 64;
/// Shortest interval between two runs of a check, ms.
pub const MIN_CHECK_INTERVAL_MS: u64 = 100;
/// Longest interval or timeout, ms (one day).
pub const MAX_CHECK_DURATION_MS: u64 = 86_400_000;
/// Largest `failures_before_critical` / `successes_before_passing`.
pub const MAX_CHECK_THRESHOLD: u32 = 100;

/// An active health check of a service instance, run by the node that owns
/// the instance. Exactly one of `http`, `tcp` and `command` is set.
///
/// A run **passes**, **warns** or **fails**:
/// - `http`: a `GET` of the URL (plain `http://` only); a 2xx answer
///   passes, 429 warns, any other answer, a connection error or the
///   timeout fails;
/// - `tcp`: a TCP connection to `host:port` opens within the timeout;
/// - `command`: the program (`command[0]`, found on `PATH`) runs with the
///   other arguments, without a shell; exit code 0 passes, 1 warns,
///   anything else (or not starting, or the timeout, which kills it)
///   fails.
///
/// The check's status follows its runs with hysteresis: the first run sets
/// it directly; afterwards `successes_before_passing` passing runs in a
/// row are needed to turn it passing and `failures_before_critical`
/// non-passing runs in a row to turn it warning or critical (the status of
/// the last of those runs). The instance's health is the worst status of
/// its checks. With `deregister_critical_after_ms`, an instance whose
/// check stays critical that long is deregistered.
///
/// ```
/// use starling::node::CheckSpec;
/// let check = CheckSpec::http("http://127.0.0.1:8080/health")
///     .with_interval_ms(5_000)
///     .with_timeout_ms(1_000)
///     .with_failures_before_critical(3);
/// assert!(check.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CheckSpec {
    /// A name unique within the instance (default `http-1`, `tcp-2`...: the
    /// kind and the check's position, from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// URL to `GET` (`http://host:port/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port` to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Program and arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time between the starts of two runs, ms (default 10 000, at least 100).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a run may take before it fails, ms (default 2 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Non-passing runs in a row that turn the check warning or critical
    /// (default 1).
    #[serde(default = "one")]
    pub failures_before_critical: u32,
    /// Passing runs in a row that turn the check passing again (default 1).
    #[serde(default = "one")]
    pub successes_before_passing: u32,
    /// Deregister the instance once this check has been critical for this
    /// long, ms (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_after_ms: Option<u64>,
}

fn default_interval_ms() -> u64 {
    10_000
}

fn default_timeout_ms() -> u64 {
    2_000
}

fn one() -> u32 {
    1
}

impl CheckSpec {
    fn new() -> CheckSpec {
        CheckSpec {
            name: None,
            http: None,
            tcp: None,
            command: None,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            failures_before_critical: 1,
            successes_before_passing: 1,
            deregister_critical_after_ms: None,
        }
    }

    /// An HTTP check of `url`, with the default settings.
    pub fn http(url: impl Into<String>) -> CheckSpec {
        CheckSpec {
            http: Some(url.into()),
            ..CheckSpec::new()
        }
    }

    /// A TCP connect check of `host:port`, with the default settings.
    pub fn tcp(addr: impl Into<String>) -> CheckSpec {
        CheckSpec {
            tcp: Some(addr.into()),
            ..CheckSpec::new()
        }
    }

    /// A command check (program and arguments, no shell), with the
    /// default settings.
    pub fn command<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> CheckSpec {
        CheckSpec {
            command: Some(argv.into_iter().map(Into::into).collect()),
            ..CheckSpec::new()
        }
    }

    /// With a name.
    pub fn with_name(mut self, name: impl Into<String>) -> CheckSpec {
        self.name = Some(name.into());
        self
    }

    /// With an interval, ms.
    pub fn with_interval_ms(mut self, ms: u64) -> CheckSpec {
        self.interval_ms = ms;
        self
    }

    /// With a timeout, ms.
    pub fn with_timeout_ms(mut self, ms: u64) -> CheckSpec {
        self.timeout_ms = ms;
        self
    }

    /// With a failure threshold.
    pub fn with_failures_before_critical(mut self, n: u32) -> CheckSpec {
        self.failures_before_critical = n;
        self
    }

    /// With a success threshold.
    pub fn with_successes_before_passing(mut self, n: u32) -> CheckSpec {
        self.successes_before_passing = n;
        self
    }

    /// Deregister the instance after this check has been critical this
    /// long, ms.
    pub fn with_deregister_critical_after_ms(mut self, ms: u64) -> CheckSpec {
        self.deregister_critical_after_ms = Some(ms);
        self
    }

    /// Check the definition: one kind, a parsable target, settings within
    /// their limits.
    pub fn validate(&self) -> Result<(), String> {
        self.probe().map(|_| ())
    }

    /// The kind and target, parsed.
    pub(crate) fn probe(&self) -> Result<Probe, String> {
        let kinds = [self.http.is_some(), self.tcp.is_some(), self.command.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("a check needs exactly one of `http`, `tcp` and `command`".into());
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 64 {
                return Err(format!("check name {name:?} must be 1..=64 bytes"));
            }
        }
        for (what, ms) in [("interval_ms", self.interval_ms), ("timeout_ms", self.timeout_ms)] {
            let min = if what == "interval_ms" {
                MIN_CHECK_INTERVAL_MS
            } else {
                10
            };
            if !(min..=MAX_CHECK_DURATION_MS).contains(&ms) {
                return Err(format!(
                    "check {what} must be {min}..={MAX_CHECK_DURATION_MS}, got {ms}"
                ));
            }
        }
        for (what, n) in [
            ("failures_before_critical", self.failures_before_critical),
            ("successes_before_passing", self.successes_before_passing),
        ] {
            if !(1..=MAX_CHECK_THRESHOLD).contains(&n) {
                return Err(format!("check {what} must be 1..={MAX_CHECK_THRESHOLD}, got {n}"));
            }
        }
        if let Some(ms) = self.deregister_critical_after_ms {
            if !(MIN_CHECK_INTERVAL_MS..=MAX_CHECK_DURATION_MS * 30).contains(&ms) {
                return Err(format!(
                    "check deregister_critical_after_ms must be {MIN_CHECK_INTERVAL_MS}..={}, got {ms}",
                    MAX_CHECK_DURATION_MS * 30
                ));
            }
        }
        if let Some(url) = &self.http {
            return parse_http(url);
        }
        if let Some(addr) = &self.tcp {
            check_len("tcp", addr)?;
            parse_host_port(addr).ok_or_else(|| format!("check tcp {addr:?} must be host:port"))?;
            return Ok(Probe::Tcp { addr: addr.clone() });
        }
        let argv = self.command.as_ref().expect("exactly one kind is set");
        if argv.is_empty() || argv[0].is_empty() {
            return Err("check command needs a program: [\"program\", \"arg\", ...]".into());
        }
        if argv.len() > MAX_COMMAND_ARGS {
            return Err(format!(
                "check command has more than {MAX_COMMAND_ARGS} arguments"
            ));
        }
        for a in argv {
            check_len("command argument", a)?;
        }
        Ok(Probe::Command { argv: argv.clone() })
    }

    /// `http`, `tcp` or `command`.
    pub(crate) fn kind(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else if self.tcp.is_some() {
            "tcp"
        } else {
            "command"
        }
    }

    /// What the check probes, as text (URL, address, command line).
    pub(crate) fn target(&self) -> String {
        match (&self.http, &self.tcp, &self.command) {
            (Some(u), _, _) => u.clone(),
            (_, Some(a), _) => a.clone(),
            (_, _, Some(argv)) => argv.join(" "),
            _ => String::new(),
        }
    }

    /// The run interval.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The run timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Validate the checks of one instance and give every check its name (the
/// default one where none is set). Names must be unique.
pub(crate) fn named_checks(checks: &[CheckSpec]) -> Result<Vec<(String, Probe)>, String> {
    if checks.len() > MAX_CHECKS_PER_INSTANCE {
        return Err(format!(
            "at most {MAX_CHECKS_PER_INSTANCE} checks per instance, got {}",
            checks.len()
        ));
    }
    let mut out: Vec<(String, Probe)> = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let probe = c.probe().map_err(|e| format!("check {}: {e}", i + 1))?;
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", c.kind(), i + 1));
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("two checks are named {name:?}"));
        }
        out.push((name, probe));
    }
    Ok(out)
}

/// A check's target, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `GET` this URL.
    Http {
        /// The full URL.
        uri: hyper::Uri,
        /// Host to connect to.
        host: String,
        /// Port to connect to.
        port: u16,
    },
    /// Connect to `host:port`.
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// Run this program with these arguments.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

fn check_len(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_CHECK_FIELD_LEN {
        return Err(format!("check {what} must be 1..={MAX_CHECK_FIELD_LEN} bytes"));
    }
    Ok(())
}

fn parse_http(url: &str) -> Result<Probe, String> {
    check_len("http", url)?;
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("check http {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "check http {url:?}: https is not supported by HTTP checks; use a tcp check, \
                 or a command check running curl"
            ))
        }
        _ => return Err(format!("check http {url:?} must start with http://")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("check http {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    Ok(Probe::Http { uri, host, port })
}

/// `host:port` (IPv6 hosts in brackets) → (host, port).
pub(crate) fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_needs_exactly_one_kind() {
        let mut c = CheckSpec::http("http://127.0.0.1:1/h");
        assert!(c.validate().is_ok());
        c.tcp = Some("127.0.0.1:1".into());
        assert!(c.validate().unwrap_err().contains("exactly one"));
        let none = CheckSpec::new();
        assert!(none.validate().unwrap_err().contains("exactly one"));
    }

    #[test]
    fn targets_are_parsed_and_bad_ones_named() {
        match CheckSpec::http("http://localhost:8080/health?x=1")
            .probe()
            .unwrap()
        {
            Probe::Http { host, port, uri } => {
                assert_eq!((host.as_str(), port), ("localhost", 8080));
                assert_eq!(uri.path_and_query().unwrap().as_str(), "/health?x=1");
            }
            other => panic!("{other:?}"),
        }
        match CheckSpec::http("http://[::1]/").probe().unwrap() {
            Probe::Http { host, port, .. } => assert_eq!((host.as_str(), port), ("::1", 80)),
            other => panic!("{other:?}"),
        }
        assert!(CheckSpec::http("https://x/")
            .validate()
            .unwrap_err()
            .contains("https"));
        assert!(CheckSpec::http("ftp://x/")
            .validate()
            .unwrap_err()
            .contains("http://"));
        assert!(CheckSpec::tcp("127.0.0.1")
            .validate()
            .unwrap_err()
            .contains("host:port"));
        assert!(CheckSpec::tcp("[::1]:22").validate().is_ok());
        assert!(CheckSpec::command(Vec::<String>::new()).validate().is_err());
        assert!(CheckSpec::command(["true"]).validate().is_ok());
    }

    #[test]
    fn settings_outside_their_limits_are_refused_by_name() {
        let c = CheckSpec::tcp("h:1");
        assert!(c
            .clone()
            .with_interval_ms(99)
            .validate()
            .unwrap_err()
            .contains("interval_ms"));
        assert!(c
            .clone()
            .with_timeout_ms(0)
            .validate()
            .unwrap_err()
            .contains("timeout_ms"));
        assert!(c
            .clone()
            .with_failures_before_critical(0)
            .validate()
            .unwrap_err()
            .contains("failures_before_critical"));
        assert!(c
            .clone()
            .with_successes_before_passing(101)
            .validate()
            .unwrap_err()
            .contains("successes_before_passing"));
        assert!(c
            .with_deregister_critical_after_ms(1)
            .validate()
            .unwrap_err()
            .contains("deregister_critical_after_ms"));
    }

    #[test]
    fn names_default_to_kind_and_position_and_must_be_unique() {
        let checks = [CheckSpec::tcp("h:1"), CheckSpec::command(["true"])];
        let names: Vec<String> = named_checks(&checks)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["tcp-1", "command-2"]);
        let dup = [
            CheckSpec::tcp("h:1").with_name("a"),
            CheckSpec::tcp("h:2").with_name("a"),
        ];
        assert!(named_checks(&dup).unwrap_err().contains("\"a\""));
        let many = vec![CheckSpec::tcp("h:1"); MAX_CHECKS_PER_INSTANCE + 1];
        assert!(named_checks(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn json_uses_defaults_and_refuses_unknown_fields() {
        let c: CheckSpec = serde_json::from_str(r#"{"tcp":"h:1"}"#).unwrap();
        assert_eq!(c, CheckSpec::tcp("h:1"));
        assert!(serde_json::from_str::<CheckSpec>(r#"{"tcp":"h:1","intervall_ms":5}"#).is_err());
    }
}
