//! `loadgen`: Confab's benchmark tool. It starts (or targets) a server, drives it over the real
//! protocols (GraphQL over HTTP, graphql-transport-ws) and prints figures, as a table and as JSON.
//!
//! Every delivered message is checked (each subscriber gets every message once, in increasing id
//! order, and the ids are the ones `sendMessage` returned), so a fast wrong answer cannot pass: a
//! failed check ends the run with a non-zero exit and says what was wrong. Speed is only ever
//! reported, next to its target, never asserted.
//!
//! Servers run as child processes (this same binary re-executed with a hidden subcommand), so
//! the RSS and CPU figures are the server's own. Besides Confab there is `raw`, a minimal
//! WebSocket broadcast server speaking just enough of the same protocols for the same client:
//! the baseline Confab's fan-out figures are compared against in the same run.

mod client;
mod fanout;
mod history;
mod idle;
mod login;
mod presence;
mod process;
mod raw;
mod report;
mod send;
mod team;
mod unread;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use report::Report;

/// Confab's load generator: fan-out, send, login, history, idle-socket, unread, presence and
/// team figures.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Run against an already-running Confab at this URL (e.g. http://127.0.0.1:8080) instead
    /// of starting one; the server's RSS and CPU are then not reported.
    #[arg(long, global = true)]
    target: Option<String>,

    /// Which server(s) to measure; the default is `both` for fanout and idle, `confab` for the
    /// scenarios where the raw baseline answers nothing comparable.
    #[arg(long, global = true)]
    against: Option<Against>,

    /// Also write every figure as JSON to this file (`-` for a final line on stdout).
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    /// Tiny sizes, so that CI can run each scenario once in seconds.
    #[arg(long, global = true)]
    smoke: bool,

    /// Upper bound on any one phase of a run (sending, draining, paging), in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    phase_seconds: u64,
}

impl Common {
    fn phase_limit(&self) -> Duration {
        Duration::from_secs(self.phase_seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Against {
    Confab,
    Raw,
    Both,
}

/// Which server one run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Confab,
    Raw,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Self::Confab => "confab",
            Self::Raw => "raw",
        }
    }
}

impl Common {
    fn servers(&self, default: Against) -> Vec<Server> {
        match self.against.unwrap_or(default) {
            Against::Confab => vec![Server::Confab],
            Against::Raw => vec![Server::Raw],
            Against::Both => vec![Server::Confab, Server::Raw],
        }
    }
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N subscribers in one room, senders at a fixed rate (or as fast as the fan-out allows).
    Fanout(fanout::FanoutArgs),
    /// Concurrent senders, no subscribers: durable sendMessage/s, then p99 at half that rate.
    Send(send::SendArgs),
    /// Logins/s at the default argon2 parameters while probing /healthz.
    Login(login::LoginArgs),
    /// Page a room of many messages from newest to oldest.
    History(history::HistoryArgs),
    /// N idle subscribed WebSockets: server RSS per connection.
    Idle(idle::IdleArgs),
    /// `myRooms` with unread and mention counts for a user in 100 rooms at 1M messages.
    Unread(unread::UnreadArgs),
    /// The presence events observers hear when 5,000 users open a socket at once.
    Presence(presence::PresenceArgs),
    /// N users at a chat team's per-user action rates, every delivery checked; or the largest
    /// N that holds the SLOs (`--find-ceiling`).
    Team(team::TeamArgs),
    /// Every scenario of the target table, one after the other.
    All,
    /// (internal) Serve Confab on a port and print the bound address.
    #[command(hide = true)]
    ServeConfab(process::ServeConfabArgs),
    /// (internal) Serve the raw broadcast baseline and print the bound address.
    #[command(hide = true)]
    ServeRaw(raw::ServeRawArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.scenario {
        Scenario::ServeConfab(args) => return runtime.block_on(process::serve_confab(args)),
        Scenario::ServeRaw(args) => return runtime.block_on(raw::serve(args)),
        _ => {}
    }
    // 10k sockets need 10k descriptors; the children inherit the raised limit.
    let _ = confab::server::connections::raise_open_files_limit();
    let mut report = Report::default();
    let outcome = runtime.block_on(run(&cli.scenario, &cli.common, &mut report));
    report.print_table();
    if let Some(path) = &cli.common.json
        && let Err(e) = report.write_json(path)
    {
        eprintln!("loadgen: cannot write the JSON report: {e:#}");
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(scenario: &Scenario, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    match scenario {
        Scenario::Fanout(args) => fanout::run(args, common, report).await,
        Scenario::Send(args) => send::run(args, common, report).await,
        Scenario::Login(args) => login::run(args, common, report).await,
        Scenario::History(args) => history::run(args, common, report).await,
        Scenario::Idle(args) => idle::run(args, common, report).await,
        Scenario::Unread(args) => unread::run(args, common, report).await,
        Scenario::Presence(args) => presence::run(args, common, report).await,
        Scenario::Team(args) => team::run(args, common, report).await,
        Scenario::All => {
            for args in fanout::FanoutArgs::target_table(common.smoke) {
                fanout::run(&args, common, report).await?;
            }
            send::run(&send::SendArgs::default(), common, report).await?;
            login::run(&login::LoginArgs::default(), common, report).await?;
            history::run(&history::HistoryArgs::default(), common, report).await?;
            idle::run(&idle::IdleArgs::default(), common, report).await?;
            if common.target.is_none() {
                unread::run(&unread::UnreadArgs::default(), common, report).await?;
            } else {
                report.note("unread: skipped, it seeds the server's file and --target has none");
            }
            presence::run(&presence::PresenceArgs::default(), common, report).await?;
            if common.target.is_none() {
                team::run(&team::TeamArgs::default(), common, report).await
            } else {
                report.note("team: skipped, it seeds the server's file and --target has none");
                Ok(())
            }
        }
        Scenario::ServeConfab(_) | Scenario::ServeRaw(_) => unreachable!("handled in main"),
    }
}
