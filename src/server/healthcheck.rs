//! `confab healthcheck`: one `GET /healthz` to a server on this machine, for a container's
//! `HEALTHCHECK` in an image that has no HTTP client (no curl, no wget).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::config::ListenAddr;

/// How long the whole check may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `Ok` when the server listening on `addr` answers `/healthz` with 200 within [`TIMEOUT`];
/// otherwise why not, in one line.
pub async fn check(addr: &ListenAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Err("--addr names port 0: give the port the server listens on".into());
    }
    tokio::time::timeout(TIMEOUT, probe(addr))
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {addr} within {TIMEOUT:?}")))
}

/// Tries each address `addr` stands for (a loopback one for "every interface").
async fn probe(addr: &ListenAddr) -> Result<(), String> {
    let mut last = format!("--addr {addr} names no address");
    for target in addr.local_targets().await? {
        match once(target).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn once(target: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {target}: {e}"))?;
    // The status line is all that matters: read at most 1 KiB, until the server closes.
    let mut head = Vec::new();
    (&mut stream)
        .take(1024)
        .read_to_end(&mut head)
        .await
        .map_err(|e| format!("no answer from {target}: {e}"))?;
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    match status.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("http://{target}/healthz answered {status:?}")),
    }
}
