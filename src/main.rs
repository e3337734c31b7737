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
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
