//! `idle`: N subscribed WebSockets that say nothing; the server's RSS per connection
//! (ΔVmRSS / N between before the first socket and after the last one is live and settled).
//!
//! Check: after measuring, one message is sent and every socket must receive it, so the sockets
//! measured were really subscribed.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use futures_util::{StreamExt as _, stream};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{
    Against, Common, Server,
    client::{self, Http, Incoming, Ws},
    process::ServerProcess,
    report::{Measured, Report, Target},
};

#[derive(Debug, Clone, Default, Args)]
pub struct IdleArgs {
    /// Idle subscribed WebSockets [default: as many as the open-files limit allows, in
    /// thousands, keeping 1,000 spare (19,000 at 20,000); smoke: 50].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Open and initialise the sockets but subscribe to nothing: with a subscribed run, splits
    /// the cost of a socket from the cost of its subscription.
    #[arg(long)]
    pub no_subscribe: bool,
}

pub async fn run(args: &IdleArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let n = args
        .connections
        .unwrap_or_else(|| if common.smoke { 50 } else { fd_bound() })
        .max(1);
    let mut confab = None;
    let mut raw = None;
    for server in common.servers(Against::Both) {
        let measured = run_one(server, n, args.no_subscribe, common, report)
            .await
            .with_context(|| format!("idle against {}", server.name()))?;
        match server {
            Server::Confab => confab = Some(measured),
            Server::Raw => raw = Some(measured),
        }
    }
    let kind = if args.no_subscribe {
        "initialised, unsubscribed"
    } else {
        "subscribed"
    };
    report.add(
        &format!("idle {n} {kind} WebSockets"),
        confab.as_ref(),
        raw.as_ref(),
        &[("RSS per socket", Target::AtMost { value: 4.0 })],
    );
    Ok(())
}

async fn run_one(
    server: Server,
    n: usize,
    no_subscribe: bool,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<Measured> {
    eprintln!("loadgen: idle {n} sockets against {}", server.name());
    let mut process = ServerProcess::start(server, common.target.as_deref())?;
    let addr = process.addr;
    let (token, room) =
        client::user_and_room(addr, &format!("lg-idle-{}", client::run_tag())).await?;
    let settle = Duration::from_secs(if common.smoke { 0 } else { 2 });
    tokio::time::sleep(settle).await;
    let before = process.rss_kib();
    let room_to_join = (!no_subscribe).then_some(room.as_str());
    let mut sockets =
        client::subscribe_many(addr, &token, room_to_join, n, 64, common.phase_limit()).await?;
    tokio::time::sleep(settle).await;
    let after = process.rss_kib();

    if no_subscribe {
        // Unsubscribed sockets must still be alive: each answers a ping.
        for (k, ws) in sockets.iter_mut().enumerate() {
            client::ping(ws)
                .await
                .with_context(|| format!("idle socket {k}"))?;
        }
        drop(sockets);
        process.stop();
        let mut measured = Measured::default();
        rss_figures(&mut measured, n, before, after);
        report.note(format!(
            "idle against {}: all {n} unsubscribed sockets answered a ping",
            server.name()
        ));
        return Ok(measured);
    }

    // Every socket must hear one message: they were live subscriptions.
    let mut http = Http::connect(addr, Some(&token)).await?;
    let id = http.send_message(&room, "m0-0", "idle-check").await?;
    let id = String::from_utf8_lossy(&id).into_owned();
    let deadline = Instant::now() + common.phase_limit();
    let heard: Vec<anyhow::Result<()>> = stream::iter(sockets)
        .map(|ws| hear(ws, &id, deadline))
        .buffer_unordered(1024)
        .collect()
        .await;
    for (k, result) in heard.into_iter().enumerate() {
        result.with_context(|| format!("idle socket {k}"))?;
    }
    process.stop();

    let mut measured = Measured::default();
    rss_figures(&mut measured, n, before, after);
    report.note(format!(
        "idle against {}: all {n} sockets received the check message",
        server.name()
    ));
    Ok(measured)
}

fn rss_figures(measured: &mut Measured, n: usize, before: Option<u64>, after: Option<u64>) {
    measured.put("sockets", "conn", n as f64);
    if let (Some(before), Some(after)) = (before, after) {
        measured.put("server RSS before", "MiB", before as f64 / 1024.0);
        measured.put("server RSS with sockets", "MiB", after as f64 / 1024.0);
        measured.put(
            "RSS per socket",
            "KiB",
            after.saturating_sub(before) as f64 / n as f64,
        );
    }
}

async fn hear(mut ws: Ws, id: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("no message before the time limit")?;
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                if let Incoming::Message { id: got, .. } = client::parse_frame(text.as_str())? {
                    ensure!(got == id, "expected message {id}, got {got}");
                    return Ok(());
                }
            }
            Some(Ok(WsMessage::Close(close))) => bail!("closed: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the socket closed"),
        }
    }
}

/// The most sockets this process's open-files limit allows (the server, a child, has the same
/// limit and needs one file per socket too), in whole thousands, with 1,000 kept for everything
/// else; at least 1,000.
fn fd_bound() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
        _ => 11_000,
    };
    (soft.saturating_sub(1000) / 1000 * 1000).clamp(1000, 100_000)
}
