//! The client side: one keep-alive HTTP/1 connection per caller for GraphQL over HTTP, and
//! graphql-transport-ws subscribers. Hot paths (sending, receiving a `next` frame) build and
//! parse JSON with borrowed fixed shapes, not `serde_json::Value`.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message as WsMessage, client::IntoClientRequest as _, protocol::WebSocketConfig,
    },
};

pub const REGISTER: &str =
    "mutation($u:String!,$p:String!){register(username:$u,password:$p){token user{id}}}";
pub const LOGIN: &str =
    "mutation($u:String!,$p:String!){login(username:$u,password:$p){token user{id username}}}";
pub const CREATE_ROOM: &str = "mutation($n:String!){createRoom(name:$n){id}}";
const SEND: &str =
    "mutation($r:ID!,$b:String!,$c:String){sendMessage(roomId:$r,body:$b,clientId:$c){id}}";
const ROOM_EVENTS: &str =
    "subscription($r:ID!){roomEvents(roomId:$r){__typename ... on MessageAdded{message{id body}}}}";
/// The operation id every subscriber uses (the raw baseline pre-encodes frames for it).
pub const OPERATION_ID: &str = "1";
pub const PASSWORD: &str = "loadgen-password";

/// Nanoseconds on the client's monotonic clock, shared by every task (bodies carry send times).
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A message id as received: 24 lowercase hex characters, so byte order is id order.
pub type IdBytes = [u8; 24];

pub fn id_bytes(id: &str) -> anyhow::Result<IdBytes> {
    id.as_bytes()
        .try_into()
        .map_err(|_| anyhow!("message id {id:?} is not 24 characters"))
}

/// A cheap order-independent fingerprint of a set of ids: the wrapping sum of their FNV-1a hashes.
pub fn id_hash(id: &IdBytes) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &byte in id {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// One keep-alive HTTP/1 connection.
pub struct Http {
    addr: SocketAddr,
    host: String,
    sender: SendRequest<Full<Bytes>>,
    authorization: Option<String>,
}

impl Http {
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            addr,
            host: addr.to_string(),
            sender,
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    pub fn set_token(&mut self, token: &str) {
        self.authorization = Some(format!("Bearer {token}"));
    }

    /// One request with this connection's token; the whole response body.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let authorization = self.authorization.take();
        let answer = self
            .request_as(method, path, body, authorization.as_deref())
            .await;
        self.authorization = authorization;
        answer
    }

    /// One request with the given `Authorization` value (a pooled connection serves many
    /// users); the whole response body.
    pub async fn request_as(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        authorization: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender
            .ready()
            .await
            .with_context(|| format!("the connection to {} closed", self.addr))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A GraphQL operation whose answer is `data.<field>`; GraphQL errors become an error.
    pub async fn graphql(
        &mut self,
        query: &str,
        variables: Value,
        field: &str,
    ) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
        let (status, body) = self
            .request(Method::POST, "/graphql", Some(body.into()))
            .await?;
        data_field(status, &body, field)
    }

    /// Registers a user and returns its token.
    pub async fn register(&mut self, username: &str) -> anyhow::Result<String> {
        let answer = self
            .graphql(REGISTER, json!({"u": username, "p": PASSWORD}), "register")
            .await?;
        token_of(&answer)
    }

    pub async fn create_room(&mut self, name: &str) -> anyhow::Result<String> {
        let room = self
            .graphql(CREATE_ROOM, json!({"n": name}), "createRoom")
            .await?;
        room["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("createRoom answered no id: {room}"))
    }

    /// `sendMessage`, built and parsed by hand: the sender's hot path. `body` and `client_id`
    /// must need no JSON escaping (the tool's own ASCII).
    pub async fn send_message(
        &mut self,
        room: &str,
        body: &str,
        client_id: &str,
    ) -> anyhow::Result<IdBytes> {
        let request = send_request(room, body, client_id);
        let (status, answer) = self
            .request(Method::POST, "/graphql", Some(request.into()))
            .await?;
        sent_id(status, &answer)
    }
}

/// The JSON body of a `sendMessage` request, built by hand (see [`Http::send_message`]).
pub fn send_request(room: &str, body: &str, client_id: &str) -> String {
    debug_assert!(!body.contains(['"', '\\']) && !client_id.contains(['"', '\\']));
    format!(r#"{{"query":"{SEND}","variables":{{"r":"{room}","b":"{body}","c":"{client_id}"}}}}"#)
}

/// The message id a `sendMessage` answer gives, parsed with borrowed fixed shapes.
pub fn sent_id(status: StatusCode, answer: &[u8]) -> anyhow::Result<IdBytes> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        data: Option<Data<'a>>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(rename = "sendMessage", borrow)]
        send_message: Option<Sent<'a>>,
    }
    #[derive(Deserialize)]
    struct Sent<'a> {
        id: &'a str,
    }
    let parsed: Option<Answer> = serde_json::from_slice(answer).ok();
    match parsed.and_then(|a| a.data).and_then(|d| d.send_message) {
        Some(sent) => id_bytes(sent.id),
        None => bail!(
            "sendMessage failed: HTTP {status}: {}",
            String::from_utf8_lossy(answer)
        ),
    }
}

/// `data.<field>` of a GraphQL answer; GraphQL errors, or no data, become an error.
pub fn data_field(status: StatusCode, body: &[u8], field: &str) -> anyhow::Result<Value> {
    let mut answer: Value = serde_json::from_slice(body).with_context(|| {
        format!(
            "{field}: HTTP {status}, not JSON: {}",
            String::from_utf8_lossy(body)
        )
    })?;
    if let Some(errors) = answer.get("errors") {
        bail!("{field}: HTTP {status}, errors {errors}");
    }
    match answer
        .pointer_mut(&format!("/data/{field}"))
        .map(Value::take)
    {
        Some(value) if !value.is_null() => Ok(value),
        _ => bail!("{field}: HTTP {status}, no data in {answer}"),
    }
}

/// Keep-alive connections shared by many users, each request with its caller's token: what
/// a scenario with thousands of users uses instead of a connection each. At most `size`
/// requests are in flight; a connection that fails is replaced, and its request tried once
/// more on the new one (every request sent through it must be safe to repeat).
pub struct HttpPool {
    addr: SocketAddr,
    idle: std::sync::Mutex<Vec<Http>>,
    permits: tokio::sync::Semaphore,
}

impl HttpPool {
    pub fn new(addr: SocketAddr, size: usize) -> Self {
        Self {
            addr,
            idle: std::sync::Mutex::new(Vec::with_capacity(size)),
            permits: tokio::sync::Semaphore::new(size.max(1)),
        }
    }

    /// POSTs a GraphQL body as `authorization` (`Bearer …`); the status and whole answer.
    pub async fn post(
        &self,
        authorization: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("the HTTP pool closed")?;
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut http = match pooled {
            Some(http) => http,
            None => Http::connect(self.addr, None).await?,
        };
        let answer = match http
            .request_as(
                Method::POST,
                "/graphql",
                Some(body.clone()),
                Some(authorization),
            )
            .await
        {
            Ok(answer) => answer,
            // Idle keep-alive connections are closed by the server after a while.
            Err(_) => {
                http = Http::connect(self.addr, None).await?;
                http.request_as(Method::POST, "/graphql", Some(body), Some(authorization))
                    .await?
            }
        };
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(http);
        Ok(answer)
    }
}

/// SplitMix64: a fixed, dependency-free sequence, so every run has the same shape.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn token_of(payload: &Value) -> anyhow::Result<String> {
    payload["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no token in {payload}"))
}

/// Registers a user on a fresh connection and creates a room: what every fan-out-like scenario
/// starts with. Returns (token, room id).
pub async fn user_and_room(addr: SocketAddr, name: &str) -> anyhow::Result<(String, String)> {
    let mut http = Http::connect(addr, None).await?;
    let token = http.register(name).await?;
    http.set_token(&token);
    let room = http.create_room(name).await?;
    Ok((token, room))
}

/// A unique-enough suffix for usernames and room names, so `--target` runs can repeat.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff_ffff)
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a graphql-transport-ws socket and initialises it with `token` (acknowledged).
pub async fn connect_initialised(addr: SocketAddr, token: &str) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/graphql").into_client_request()?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static("graphql-transport-ws"),
    );
    // Small buffers: the client holds up to 10k of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(WsMessage::text(init.to_string())).await?;
    expect(&mut ws, "connection_ack").await?;
    Ok(ws)
}

/// Opens a socket (see [`connect_initialised`]), subscribes to `roomEvents` of `room` and
/// returns once the subscription is live: the server reads a client's next message only after
/// its subscription is live, so the `pong` to a `ping` sent after `subscribe` proves it.
pub async fn subscribe(addr: SocketAddr, token: &str, room: &str) -> anyhow::Result<Ws> {
    let mut ws = connect_initialised(addr, token).await?;
    let subscribe = json!({
        "id": OPERATION_ID,
        "type": "subscribe",
        "payload": {"query": ROOM_EVENTS, "variables": {"r": room}},
    });
    ws.send(WsMessage::text(subscribe.to_string())).await?;
    ping(&mut ws).await?;
    Ok(ws)
}

/// A `ping` answered by a `pong`.
pub async fn ping(ws: &mut Ws) -> anyhow::Result<()> {
    ws.send(WsMessage::text(r#"{"type":"ping"}"#)).await?;
    expect(ws, "pong").await
}

/// Waits (10 s at most) for a frame of type `kind`; anything else is an error.
async fn expect(ws: &mut Ws, kind: &str) -> anyhow::Result<()> {
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .with_context(|| format!("no {kind} within 10 s"))?;
    match frame {
        Some(Ok(WsMessage::Text(text))) => {
            #[derive(Deserialize)]
            struct Frame<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
            }
            let frame: Frame = serde_json::from_str(text.as_str())
                .with_context(|| format!("not a graphql-transport-ws frame: {text}"))?;
            if frame.kind != kind {
                bail!("expected {kind}, got {text}");
            }
            Ok(())
        }
        Some(Ok(WsMessage::Close(close))) => bail!("closed while waiting for {kind}: {close:?}"),
        Some(Ok(other)) => bail!("expected {kind}, got {other:?}"),
        Some(Err(e)) => Err(e).with_context(|| format!("while waiting for {kind}")),
        None => bail!("closed while waiting for {kind}"),
    }
}

/// What a subscriber makes of one incoming text frame.
pub enum Incoming<'a> {
    /// A `MessageAdded` event: the message id and body.
    Message { id: &'a str, body: &'a str },
    /// Some other room event (joins, typing): not counted.
    OtherEvent,
    /// Anything else (`pong`, ...): ignored.
    Other,
}

/// Parses a frame just enough to check it: `next` events with their message id and body;
/// `error`, `complete` and `next` with errors are failures.
pub fn parse_frame(text: &str) -> anyhow::Result<Incoming<'_>> {
    #[derive(Deserialize)]
    struct Next<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(borrow)]
        payload: Option<Payload<'a>>,
    }
    #[derive(Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        data: Option<Data<'a>>,
        errors: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(rename = "roomEvents", borrow)]
        room_events: Option<Event<'a>>,
    }
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        message: Option<Msg<'a>>,
    }
    #[derive(Deserialize)]
    struct Msg<'a> {
        id: &'a str,
        body: &'a str,
    }
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
    }
    // Both servers write compact JSON, so a `next` frame says so verbatim.
    if text.contains(r#""type":"next""#) {
        let next: Next =
            serde_json::from_str(text).with_context(|| format!("unreadable next frame: {text}"))?;
        debug_assert_eq!(next.kind, "next");
        let payload = next
            .payload
            .ok_or_else(|| anyhow!("next without payload: {text}"))?;
        if payload.errors.is_some() {
            bail!("the subscription reported errors: {text}");
        }
        return Ok(match payload.data.and_then(|d| d.room_events) {
            Some(Event { message: Some(m) }) => Incoming::Message {
                id: m.id,
                body: m.body,
            },
            Some(_) => Incoming::OtherEvent,
            None => bail!("next without roomEvents: {text}"),
        });
    }
    let frame: Frame =
        serde_json::from_str(text).with_context(|| format!("not a frame: {text}"))?;
    match frame.kind {
        "error" | "complete" => bail!("the subscription ended: {text}"),
        _ => Ok(Incoming::Other),
    }
}

/// Opens `n` subscribers (or, with `room` None, initialised sockets that subscribe to nothing),
/// at most `parallel` handshakes at a time.
pub async fn subscribe_many(
    addr: SocketAddr,
    token: &str,
    room: Option<&str>,
    n: usize,
    parallel: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Ws>> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|_| async move {
            let mut tries = 0;
            loop {
                let opened = match room {
                    Some(room) => subscribe(addr, token, room).await,
                    None => connect_initialised(addr, token).await,
                };
                match opened {
                    Ok(ws) => return Ok(ws),
                    // A connect refused under a burst (full accept backlog) is retried a few times.
                    Err(e) if tries < 3 && started.elapsed() < limit => {
                        tries += 1;
                        tracing_retry(&e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

fn tracing_retry(e: &anyhow::Error) {
    eprintln!("loadgen: subscribe failed, retrying: {e:#}");
}
