//! The node's one clock. A leaf.

/// Milliseconds since the Unix epoch: the wall clock the driver feeds the
/// engine and the metrics read.
#[allow(clippy::disallowed_methods)] // the node is where the clock is read
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
