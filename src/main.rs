use std::process::ExitCode;

use clap::Parser;
use confab::{
    config::{Command, Config},
    server::{Application, ConfigError},
};
use tracing_subscriber::fmt::writer::MakeWriterExt as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Schema) = config.command {
        print!("{}", confab::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    // Warnings and errors go to stderr, the rest to stdout: a refused start is one line where
    // a shell or supervisor looks for it, and `listening on …` stays on stdout for scripts.
    confab::telemetry::init(
        "info",
        std::io::stderr
            .with_max_level(tracing::Level::WARN)
            .or_else(std::io::stdout),
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
    );

    let stop = shutdown_signal();
    let app = match Application::build(&config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e:#}");
            return if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match app.run_until_stopped(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before this returns, not
/// when the future is first polled: a supervisor may signal as soon as `listening on …` is
/// printed, and a signal that comes before its handler kills the process uncleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
                tracing::warn!("cannot install signal handlers; stop the server with SIGKILL");
                return std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
