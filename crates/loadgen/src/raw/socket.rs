//! One WebSocket after the upgrade, served by one task on the bare `TcpStream`: no split, no
//! channel of its own, no allocation per delivery. The socket's feed is a receiver on the room's
//! broadcast of whole encoded frames; when it wakes it takes every frame queued (up to
//! [`COALESCE`]) and writes them all with one vectored write, then goes back to waiting.
//!
//! Buffers are kept small for idle sockets: the read buffer is released once empty, and the
//! queue of frames to write holds reference-counted frames, not copies.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    time::Duration,
};

use hyper::body::{Buf as _, Bytes};
use serde::Deserialize;
use tokio::{
    io::AsyncWriteExt as _,
    net::TcpStream,
    sync::broadcast::{self, error::RecvError, error::TryRecvError},
};

use super::frame::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use crate::client::OPERATION_ID;

/// Frames taken from the feed into one write at most.
const COALESCE: usize = 32;
/// Frames waiting to be written beyond which the socket stops reading (a client sending pings
/// without reading the pongs) and stops taking from the feed (so a slow reader lags and is closed
/// instead of holding memory).
const OUT_LIMIT: usize = 64;
/// How long a closing socket waits for its peer to read the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Bytes read from the socket at a time (on the stack; only partial frames are kept).
const READ_CHUNK: usize = 4096;

/// `{"type":"connection_ack"}` as a whole frame.
const CONNECTION_ACK: &[u8] = b"\x81\x19{\"type\":\"connection_ack\"}";
/// `{"type":"pong"}` as a whole frame.
const PONG: &[u8] = b"\x81\x0f{\"type\":\"pong\"}";

/// Serves a socket whose handshake is done; `already_read` is what the HTTP layer read past
/// the upgrade request. Returns when the socket is closed either way.
pub async fn serve(stream: TcpStream, already_read: Bytes, frames: broadcast::Sender<Bytes>) {
    let mut socket = Socket {
        stream,
        frames,
        inbuf: already_read.to_vec(),
        message: None,
        out: VecDeque::new(),
        feed: None,
        initialised: false,
        closing: false,
    };
    drop(already_read);
    socket.consume();
    socket.run().await;
}

struct Socket {
    stream: TcpStream,
    /// Where a `subscribe` gets its feed.
    frames: broadcast::Sender<Bytes>,
    /// Received bytes not yet parsed: a partial frame at most, between reads.
    inbuf: Vec<u8>,
    /// A fragmented text message being put together.
    message: Option<Vec<u8>>,
    /// Whole frames to write, in order; the first may be partly written already.
    out: VecDeque<Bytes>,
    /// The subscription's feed, once the client subscribed.
    feed: Option<broadcast::Receiver<Bytes>>,
    /// `connection_init` was acknowledged.
    initialised: bool,
    /// A close frame is queued last: nothing more is read or taken from the feed.
    closing: bool,
}

impl Socket {
    async fn run(mut self) {
        loop {
            if self.flush().is_err() {
                return;
            }
            if self.closing {
                break;
            }
            // One of these is always enabled: `out` is either empty (read) or not (write).
            let reading = self.out.len() < OUT_LIMIT;
            let taking = self.feed.is_some() && self.out.len() < COALESCE;
            tokio::select! {
                ready = self.stream.readable(), if reading => {
                    if ready.is_err() || !self.read() {
                        return;
                    }
                }
                event = next(&mut self.feed), if taking => self.take(event),
                ready = self.stream.writable(), if !self.out.is_empty() => {
                    if ready.is_err() {
                        return;
                    }
                }
            }
        }
        // The close frame is queued behind what was: give the peer a moment to read it, end our
        // side (the server closes TCP first, §7.1.1), and read until the peer's end, so that
        // bytes it sent meanwhile do not turn the close into a reset.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.finish()).await;
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.flush_all().await?;
        self.stream.shutdown().await?;
        loop {
            self.stream.readable().await?;
            if self.discard()? {
                return Ok(());
            }
        }
    }

    /// Reads and drops what the socket has; true at its end.
    fn discard(&self) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues an event and every other one already waiting, so that one write carries them.
    fn take(&mut self, event: Result<Bytes, RecvError>) {
        match event {
            Ok(bytes) => self.out.push_back(bytes),
            Err(RecvError::Lagged(_)) => return self.close(4500, "lagged behind"),
            Err(RecvError::Closed) => return self.close(1001, "going away"),
        }
        while self.out.len() < COALESCE {
            let Some(feed) = &mut self.feed else { return };
            match feed.try_recv() {
                Ok(bytes) => self.out.push_back(bytes),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => return self.close(4500, "lagged behind"),
                Err(TryRecvError::Closed) => return self.close(1001, "going away"),
            }
        }
    }

    /// Writes what is queued as far as the socket takes it now, many frames per write.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); OUT_LIMIT];
            let mut n = 0;
            for (slice, bytes) in slices.iter_mut().zip(&self.out) {
                *slice = IoSlice::new(bytes);
                n += 1;
            }
            let mut written = match self.stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            while let Some(front) = self.out.front_mut() {
                if written < front.len() {
                    front.advance(written);
                    break;
                }
                written -= front.len();
                self.out.pop_front();
            }
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> io::Result<()> {
        loop {
            self.flush()?;
            if self.out.is_empty() {
                return Ok(());
            }
            self.stream.writable().await?;
        }
    }

    /// Reads what the socket has and handles every complete frame; false once it has ended.
    fn read(&mut self) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        while !self.closing && self.out.len() < OUT_LIMIT {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.consume();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        true
    }

    /// Handles every complete frame in `inbuf` and keeps the rest.
    fn consume(&mut self) {
        let mut inbuf = std::mem::take(&mut self.inbuf);
        let mut at = 0;
        while !self.closing {
            match frame::parse(&mut inbuf[at..]) {
                Ok(Some(parsed)) => {
                    let payload = &inbuf[at + parsed.payload.start..at + parsed.payload.end];
                    self.on_frame(parsed.fin, parsed.opcode, payload);
                    at += parsed.len;
                }
                Ok(None) => break,
                Err(code) if code == frame::TOO_BIG => self.close(code, "frame too big"),
                Err(code) => self.close(code, "a frame no client may send"),
            }
        }
        if self.closing || at == inbuf.len() {
            // An idle socket keeps no read buffer.
            return;
        }
        inbuf.drain(..at);
        self.inbuf = inbuf;
    }

    fn on_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        match (opcode, self.message.as_mut()) {
            (OP_TEXT, None) if fin => self.on_text(payload),
            (OP_TEXT, None) => self.message = Some(payload.to_vec()),
            (OP_CONTINUATION, Some(message)) => {
                if message.len() + payload.len() > frame::MAX_PAYLOAD {
                    return self.close(frame::TOO_BIG, "message too big");
                }
                message.extend_from_slice(payload);
                if fin && let Some(message) = self.message.take() {
                    self.on_text(&message);
                }
            }
            (OP_TEXT | OP_CONTINUATION, _) => {
                self.close(frame::PROTOCOL_ERROR, "fragments out of order")
            }
            (OP_BINARY, _) => self.close(frame::UNSUPPORTED_DATA, "binary frames"),
            (OP_PING, _) => self.out.push_back(frame::encode(OP_PONG, payload)),
            (OP_CLOSE, _) => match frame::check_close(payload) {
                Ok(code) => {
                    // Echo the peer's code (§5.5.1).
                    self.feed = None;
                    self.closing = true;
                    self.out.push_back(match code {
                        Some(code) => frame::close(code, ""),
                        None => frame::encode(OP_CLOSE, &[]),
                    });
                }
                Err(code) => self.close(code, "a malformed close frame"),
            },
            // OP_PONG, and nothing else passes `frame::parse`.
            _ => {}
        }
    }

    /// A graphql-transport-ws message.
    fn on_text(&mut self, text: &[u8]) {
        #[derive(Deserialize)]
        struct Incoming<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            id: Option<&'a str>,
        }
        let Ok(text) = std::str::from_utf8(text) else {
            return self.close(frame::INVALID_PAYLOAD, "text that is not UTF-8");
        };
        let Ok(Incoming { kind, id }) = serde_json::from_str(text) else {
            return self.close(4400, "not a graphql-transport-ws message");
        };
        match kind {
            "connection_init" if self.initialised => {
                self.close(4429, "Too many initialisation requests")
            }
            "connection_init" => {
                self.initialised = true;
                self.out.push_back(Bytes::from_static(CONNECTION_ACK));
            }
            "ping" => self.out.push_back(Bytes::from_static(PONG)),
            "pong" => {}
            "subscribe" if !self.initialised => self.close(4401, "Unauthorized"),
            // Frames are encoded once, for the one operation id every loadgen client uses.
            "subscribe" if id != Some(OPERATION_ID) => {
                self.close(4400, "the raw baseline serves operation id 1 only")
            }
            "subscribe" if self.feed.is_some() => {
                self.close(4409, "Subscriber for 1 already exists")
            }
            "subscribe" => self.feed = Some(self.frames.subscribe()),
            "complete" if id == Some(OPERATION_ID) => self.feed = None,
            "complete" => {}
            _ => self.close(4400, "the raw baseline does not understand that"),
        }
    }

    /// Queues a close frame last and stops reading and taking events.
    fn close(&mut self, code: u16, reason: &str) {
        self.feed = None;
        self.closing = true;
        self.out.push_back(frame::close(code, reason));
    }
}

/// The next frame of the feed (never resolves without one: the branch is disabled then).
async fn next(feed: &mut Option<broadcast::Receiver<Bytes>>) -> Result<Bytes, RecvError> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle socket is one of these futures: its size is most of the server's memory per
    /// socket (about 1 KiB), so a buffer that slips into it (a read chunk held across an await)
    /// shows here.
    #[tokio::test]
    async fn the_socket_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let task = serve(stream, Bytes::new(), broadcast::channel(1).0);
        let size = std::mem::size_of_val(&task);
        assert!(size < 2048, "the socket task is {size} bytes");
    }

    #[test]
    fn the_fixed_replies_are_whole_frames() {
        assert_eq!(
            CONNECTION_ACK,
            &frame::encode(OP_TEXT, br#"{"type":"connection_ack"}"#)[..]
        );
        assert_eq!(PONG, &frame::encode(OP_TEXT, br#"{"type":"pong"}"#)[..]);
    }
}
