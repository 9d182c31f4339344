//! Running one probe: an HTTP `GET`, a TCP connect or a command, bounded
//! by the check's timeout. Never panics and never outlives its timeout:
//! the whole run is one future dropped when the time is up (which closes
//! the socket, or kills the command's process).

use std::process::Stdio;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::core::HealthStatus;

use super::spec::{parse_host_port, Probe};
use super::state::Outcome;

/// Run `probe`, failing it (critical) after `timeout`.
pub(crate) async fn run(probe: &Probe, timeout: Duration) -> Outcome {
    let work = async {
        match probe {
            Probe::Http { uri, host, port } => http(uri, host, *port).await,
            Probe::Tcp { addr } => tcp(addr).await,
            Probe::Command { argv } => command(argv).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::new(
            HealthStatus::Critical,
            format!("timed out after {} ms", timeout.as_millis()),
        ),
    }
}

/// `GET uri`: 2xx passes, 429 warns, anything else fails. Only the status
/// line is read.
async fn http(uri: &hyper::Uri, host: &str, port: u16) -> Outcome {
    let critical = |what: String| Outcome::new(HealthStatus::Critical, what);
    let stream = match TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return critical(format!("GET {uri}: cannot connect: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return critical(format!("GET {uri}: {e}")),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri
        .authority()
        .map_or_else(|| host.to_string(), |a| a.to_string());
    let request = Request::get(path)
        .header(HOST, authority)
        .header(
            USER_AGENT,
            concat!("starling-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(r) => r,
        Err(e) => return critical(format!("GET {uri}: {e}")),
    };
    // The connection future drives the socket. It ends before the answer
    // only if the connection fails; with `connection: close` it may end
    // right after reading the answer, which is then already delivered.
    let send = sender.send_request(request);
    tokio::pin!(conn, send);
    let answer = tokio::select! {
        biased;
        a = &mut send => a,
        c = &mut conn => match c {
            Ok(()) => send.await,
            Err(e) => return critical(format!("GET {uri}: {e}")),
        },
    };
    match answer {
        Ok(response) => {
            let code = response.status();
            let status = if code.is_success() {
                HealthStatus::Passing
            } else if code == StatusCode::TOO_MANY_REQUESTS {
                HealthStatus::Warning
            } else {
                HealthStatus::Critical
            };
            Outcome::new(status, format!("GET {uri}: HTTP {code}"))
        }
        Err(e) => critical(format!("GET {uri}: {e}")),
    }
}

/// Open a TCP connection to `addr` (resolving its host name).
async fn tcp(addr: &str) -> Outcome {
    let Some((host, port)) = parse_host_port(addr) else {
        return Outcome::new(HealthStatus::Critical, format!("{addr:?} is not host:port"));
    };
    match TcpStream::connect((host.as_str(), port)).await {
        Ok(_) => Outcome::new(HealthStatus::Passing, format!("TCP connect {addr}: connected")),
        Err(e) => Outcome::new(HealthStatus::Critical, format!("TCP connect {addr}: {e}")),
    }
}

/// Run the command without a shell: exit 0 passes, 1 warns, anything else
/// fails. Its stdin is empty; the output line is the end of what it wrote.
/// Dropped on timeout, which kills the process (not processes it started
/// itself: a script should `exec` its last command).
async fn command(argv: &[String]) -> Outcome {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::new(HealthStatus::Critical, format!("cannot run {:?}: {e}", argv[0])),
    };
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => return Outcome::new(HealthStatus::Critical, format!("{:?}: {e}", argv[0])),
    };
    let (status, code) = match out.status.code() {
        Some(0) => (HealthStatus::Passing, "exit 0".to_string()),
        Some(1) => (HealthStatus::Warning, "exit 1".to_string()),
        Some(c) => (HealthStatus::Critical, format!("exit {c}")),
        None => (HealthStatus::Critical, "killed by a signal".to_string()),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push_str(" | ");
        }
        text.push_str(err.trim());
    }
    let tail = last_chars(&text, 256);
    if tail.is_empty() {
        Outcome::new(status, code)
    } else {
        Outcome::new(status, format!("{code}: {tail}"))
    }
}

/// The last `n` bytes of `s` (at a character boundary), on one line.
fn last_chars(s: &str, n: usize) -> String {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_exit_codes_map_to_health() {
        let t = Duration::from_secs(10);
        let argv = |s: &str| Probe::Command {
            argv: vec!["sh".into(), "-c".into(), s.into()],
        };
        let pass = run(&argv("echo fine"), t).await;
        assert_eq!(
            (pass.status, pass.output.as_str()),
            (HealthStatus::Passing, "exit 0: fine")
        );
        assert_eq!(run(&argv("exit 1"), t).await.status, HealthStatus::Warning);
        let crit = run(&argv("echo bad >&2; exit 2"), t).await;
        assert_eq!(
            (crit.status, crit.output.as_str()),
            (HealthStatus::Critical, "exit 2: bad")
        );
        let missing = run(
            &Probe::Command {
                argv: vec!["/nonexistent/starling-check".into()],
            },
            t,
        )
        .await;
        assert_eq!(missing.status, HealthStatus::Critical);
        assert!(missing.output.contains("cannot run"), "{}", missing.output);
    }

    #[tokio::test]
    async fn a_command_over_its_timeout_fails_and_is_killed() {
        let probe = Probe::Command {
            argv: vec!["sleep".into(), "30".into()],
        };
        let o = run(&probe, Duration::from_millis(200)).await;
        assert_eq!(o.status, HealthStatus::Critical);
        assert!(o.output.contains("timed out"), "{}", o.output);
    }

    #[tokio::test]
    async fn tcp_connects_or_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let o = run(&Probe::Tcp { addr: addr.clone() }, Duration::from_secs(5)).await;
        assert_eq!(o.status, HealthStatus::Passing, "{}", o.output);
        drop(listener);
        let o = run(&Probe::Tcp { addr }, Duration::from_secs(5)).await;
        assert_eq!(o.status, HealthStatus::Critical, "{}", o.output);
    }

    #[test]
    fn output_tails_are_cut_at_character_boundaries() {
        assert_eq!(last_chars("aé\nb", 4), "é b");
        assert_eq!(last_chars("aé\nb", 3), " b");
        assert_eq!(last_chars("abc", 10), "abc");
    }
}
#[cfg(test)]
mod http_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(code: u16) -> (u16, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let a = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(a.as_bytes()).await;
            }
        });
        (port, t)
    }

    #[tokio::test]
    async fn http_status_codes_map_to_health() {
        for (code, want) in [
            (200, HealthStatus::Passing),
            (204, HealthStatus::Passing),
            (429, HealthStatus::Warning),
            (503, HealthStatus::Critical),
        ] {
            let (port, t) = server(code).await;
            let probe = super::super::spec::CheckSpec::http(format!("http://127.0.0.1:{port}/h"))
                .probe()
                .unwrap();
            let o = run(&probe, Duration::from_secs(5)).await;
            assert_eq!(o.status, want, "{code}: {}", o.output);
            assert!(o.output.contains(&code.to_string()), "{}", o.output);
            t.abort();
        }
    }
}
