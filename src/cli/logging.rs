//! Log setup: text or JSON lines on stderr, each carrying the node id.
//!
//! The node's id is known only once its identity is loaded, and the node
//! logs from its own tokio task, outside any span the binary could enter.
//! So the id goes into every line at the formatter instead: as soon as
//! [`set_node_id`] is called, text lines read `TIME node=<id> LEVEL ...` and
//! JSON lines gain a top-level `"node_id"` field.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::{reload, Registry};

use crate::node::LogFormat;

static NODE_ID: OnceLock<String> = OnceLock::new();
/// Swaps the level filter of the installed logger (config reload).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// From now on, every log line carries this node id.
pub(crate) fn set_node_id(id: String) {
    let _ = NODE_ID.set(id);
}

/// Install the global subscriber. `filter` is in `EnvFilter` syntax.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = env_filter(filter)?;
    let (filter, handle) = reload::Layer::new(filter);
    let _ = FILTER.set(handle);
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(WithNodeId {
                        inner: format::format().json(),
                        json: true,
                    })
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        _ => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(WithNodeId {
                        inner: format::format().without_time(),
                        json: false,
                    })
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Replace the log filter of the installed logger (`EnvFilter` syntax).
pub(crate) fn set_filter(filter: &str) -> Result<(), String> {
    let filter = env_filter(filter)?;
    let handle = FILTER.get().ok_or("the logger is not installed")?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log level: {e}"))
}

/// The filter of `log_level`. hickory's DNS server logs two info lines
/// per query: it logs at warn unless the filter names it.
fn env_filter(filter: &str) -> Result<EnvFilter, String> {
    let parsed = EnvFilter::try_new(filter).map_err(|e| format!("invalid config field `log_level`: {e}"))?;
    if filter.contains("hickory") {
        return Ok(parsed);
    }
    let quiet = "hickory_server=warn".parse().expect("a valid directive");
    Ok(parsed.add_directive(quiet))
}

/// Wraps a formatter to add the node id to each line.
struct WithNodeId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithNodeId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let id = NODE_ID.get();
        if self.json {
            let Some(id) = id else {
                return self.inner.format_event(ctx, writer, event);
            };
            let mut line = String::new();
            self.inner.format_event(ctx, Writer::new(&mut line), event)?;
            match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{\"node_id\":\"{id}\",{rest}"),
                None => writer.write_str(&line),
            }
        } else {
            SystemTime.format_time(&mut writer)?;
            match id {
                Some(id) => write!(writer, " node={id} ")?,
                None => writer.write_char(' ')?,
            }
            self.inner.format_event(ctx, writer, event)
        }
    }
}
