use std::process::ExitCode;

use clap::Parser;
use confab::{
    config::{AdminAction, Command, Config, DatabaseUrl},
    server::Application,
};
use tracing_subscriber::fmt::writer::MakeWriterExt as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Schema) => {
            print!("{}", confab::graphql::sdl());
            return ExitCode::SUCCESS;
        }
        Some(Command::Admin { action }) => return admin(&config, action).await,
        Some(Command::Healthcheck) => {
            return match confab::server::healthcheck::check(&config.addr).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Backup { path, force }) => {
            let (config, path, force) = (config.clone(), path.clone(), *force);
            return blocking(move || confab::backup::backup_command(&config, &path, force)).await;
        }
        Some(Command::Restore { path }) => {
            let (config, path) = (config.clone(), path.clone());
            return blocking(move || confab::backup::restore_command(&config, &path)).await;
        }
        None => {}
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
    // Every refused start exits 2, whatever refused it (a flag, the port, the database, Redis),
    // so a supervisor tells "would not start" (2) from "stopped with an error" (1).
    let app = match Application::build(&config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
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

/// `confab admin …`: one change to the database, then exit (2 for a bad database URL, 1 for
/// anything else that failed).
async fn admin(config: &Config, action: &AdminAction) -> ExitCode {
    let url = match DatabaseUrl::parse(&config.database_url) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let store = match confab::store::connect(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    use confab::service::admin;
    let done = match action {
        AdminAction::Grant { username } => admin::set_admin(store.as_ref(), username, true)
            .await
            .map(|()| format!("{username} is a server admin")),
        AdminAction::Revoke { username } => admin::set_admin(store.as_ref(), username, false)
            .await
            .map(|()| {
                format!("{username} is no longer a server admin (the first account always is one)")
            }),
        AdminAction::Invite => admin::create_invite(store.as_ref(), None).await,
    };
    match done {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command's file work on the blocking pool.
async fn blocking(command: impl FnOnce() -> ExitCode + Send + 'static) -> ExitCode {
    tokio::task::spawn_blocking(command)
        .await
        .unwrap_or(ExitCode::FAILURE)
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
