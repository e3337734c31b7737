//! Logging, set up the same way by every process that runs Confab: the `confab` binary,
//! loadgen's child servers, and the test suite when `TEST_LOG` is set.
//!
//! One function, so the filter (`RUST_LOG`, else a default the caller names) and the format
//! cannot drift apart between them. Where the lines go and whether they are coloured differ by
//! caller, so those are parameters: loadgen's children keep stdout for announcing their address
//! and log to stderr without colour.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Installs the process-wide tracing subscriber: a `fmt` layer filtered by `RUST_LOG`, or by
/// `default_filter` (e.g. `"info"`) when `RUST_LOG` is unset or invalid, writing to `writer`
/// (e.g. `std::io::stdout`), with ANSI colours when `ansi`.
///
/// When a subscriber is already installed (a test process starts many servers), the first one
/// stays and this call does nothing.
pub fn init<W>(default_filter: &str, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .try_init();
}
