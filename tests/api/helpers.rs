//! A real Confab server on a free port with a fresh in-memory store, and typed clients for it.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use confab::{config::Config, server::Application};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

/// Guards every wait in these tests against a hang; never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `--metrics-addr` was given.
    pub metrics_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    /// The server's open client connections.
    pub connections: std::sync::Arc<confab::server::connections::Connections>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub struct Session {
    pub token: String,
    pub id: String,
}

/// Server logs on stdout, only with `TEST_LOG` set (`debug` unless `RUST_LOG` says otherwise).
fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        confab::telemetry::init("debug", std::io::stdout, true);
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        init_tracing();
        let mut config = Config::ephemeral();
        // CONFAB_TEST_STORE=mongo runs the suite against a fresh MongoDB database per test.
        if std::env::var("CONFAB_TEST_STORE").as_deref() == Ok("mongo") {
            let uri = crate::support::mongo::server_uri()
                .expect("CONFAB_TEST_STORE=mongo needs a MongoDB (see tests/support/mongo.rs)");
            config.database_url = format!("{uri}/{}", crate::support::mongo::fresh_database());
        }
        configure(&mut config);
        let app = Application::build(&config)
            .await
            .expect("the server starts");
        let addr = app.addr();
        let metrics_addr = app.metrics_addr();
        let connections = app.connections();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            http: reqwest::Client::new(),
            connections,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the server as SIGTERM would, and waits until it has.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .expect("the server stops")
                .expect("the server task")
                .expect("the server ends cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a GraphQL operation and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        assert!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        response.json().await.expect("a JSON body")
    }

    /// Like [`gql`](Self::gql) but expects success and returns `data`.
    pub async fn data(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A counter from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    pub async fn register(&self, username: &str) -> Session {
        let data = self
            .data(
                None,
                "mutation($u: String!, $p: String!) { register(username: $u, password: $p) { token user { id username } } }",
                json!({"u": username, "p": "correct horse battery"}),
            )
            .await;
        Session {
            token: data["register"]["token"]
                .as_str()
                .expect("token")
                .to_owned(),
            id: data["register"]["user"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        }
    }

    pub async fn create_room(&self, owner: &Session, name: &str) -> String {
        let data = self
            .data(
                Some(&owner.token),
                "mutation($n: String!) { createRoom(name: $n) { id } }",
                json!({"n": name}),
            )
            .await;
        data["createRoom"]["id"]
            .as_str()
            .expect("room id")
            .to_owned()
    }

    pub async fn join(&self, user: &Session, room: &str) {
        self.data(
            Some(&user.token),
            "mutation($r: ID!) { joinRoom(roomId: $r) { id } }",
            json!({"r": room}),
        )
        .await;
    }

    /// Sends a message and returns its id.
    pub async fn send(&self, user: &Session, room: &str, body: &str) -> String {
        let data = self
            .data(
                Some(&user.token),
                "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }",
                json!({"r": room, "b": body}),
            )
            .await;
        data["sendMessage"]["id"]
            .as_str()
            .expect("message id")
            .to_owned()
    }

    /// Opens a WebSocket to /graphql offering `protocol` (none when empty).
    pub async fn ws(&self, protocol: &str) -> WsClient {
        self.ws_with_header(protocol, None)
            .await
            .expect("the upgrade succeeds")
    }

    pub async fn ws_with_header(
        &self,
        protocol: &str,
        authorization: Option<&str>,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}/graphql", self.addr).into_client_request()?;
        if !protocol.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocol).expect("header"),
            );
        }
        if let Some(value) = authorization {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }

    /// A `connection_init` payload signing in a new user (sockets refuse anonymous clients).
    pub async fn signed_in(&self) -> Value {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = self.register(&format!("socket{n}")).await;
        json!({"authorization": format!("Bearer {}", user.token)})
    }

    /// A graphql-transport-ws client, signed in as `user` and acknowledged.
    pub async fn ws_as(&self, user: &Session) -> WsClient {
        let mut ws = self.ws("graphql-transport-ws").await;
        ws.init(json!({"authorization": format!("Bearer {}", user.token)}))
            .await;
        ws
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

pub fn error_field(body: &Value) -> &str {
    body["errors"][0]["extensions"]["field"]
        .as_str()
        .unwrap_or("<none>")
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Closed(u16, String),
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    /// The next JSON message or the close frame (pings and pongs skipped).
    pub async fn next(&mut self) -> Next {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("the server answers in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Next::Json(
                        serde_json::from_str(text.as_str()).expect("JSON from the server"),
                    );
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame) => Next::Closed(frame.code.into(), frame.reason.to_string()),
                        None => Next::Closed(1005, String::new()),
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(e)) => panic!("socket error: {e}"),
                None => return Next::Closed(1006, String::new()),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Json(value) => value,
            Next::Closed(code, reason) => {
                panic!("closed {code} {reason:?} while expecting a message")
            }
        }
    }

    /// Expects the server to close the socket, and returns the code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Next::Closed(code, reason) => return (code, reason),
                Next::Json(value) if value["type"] == "ka" => continue,
                Next::Json(value) => panic!("expected a close, got {value}"),
            }
        }
    }

    pub async fn init(&mut self, payload: Value) {
        self.send_json(json!({"type": "connection_init", "payload": payload}))
            .await;
        let ack = self.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send_json(json!({
            "id": id, "type": "subscribe",
            "payload": {"query": query, "variables": variables}
        }))
        .await;
    }

    /// The payload of the next `next` message, checking its id.
    pub async fn next_payload(&mut self, id: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], id, "{message}");
        message["payload"].clone()
    }
}

pub const ROOM_EVENTS: &str =
    "subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
    __typename
    ... on MessageAdded { message { id body sender { username } } }
    ... on MessageEdited { message { id body editedAt } }
    ... on MessageDeleted { messageId roomId }
    ... on MemberJoined { user { username } roomId }
    ... on MemberLeft { user { username } roomId }
    ... on Typing { user { username } typing }
} }";

impl WsClient {
    /// Sends a ping and returns what arrived before the pong. The server reads a client's
    /// messages in order and only after each subscription is live, so after the pong every
    /// earlier subscription is live.
    pub async fn ping_pong(&mut self) -> Vec<Value> {
        self.send_json(json!({"type": "ping", "payload": {"barrier": true}}))
            .await;
        let mut before = Vec::new();
        loop {
            let message = self.recv().await;
            if message["type"] == "pong" {
                assert_eq!(message["payload"], json!({"barrier": true}));
                return before;
            }
            before.push(message);
        }
    }
}

/// A Socket.IO client as the original service's clients speak it: Engine.IO 4 straight over a
/// WebSocket, Socket.IO 5 packets in the default namespace, signed in with `auth.token`.
pub struct SocketIo {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Events that arrived while an acknowledgement was awaited, in order.
    events: VecDeque<(String, Value)>,
    next_ack: u64,
}

impl TestApp {
    /// A Socket.IO client signed in as `user`, connected.
    pub async fn socketio(&self, user: &Session) -> SocketIo {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the Socket.IO upgrade succeeds");
        let mut socket = SocketIo {
            stream,
            events: VecDeque::new(),
            next_ack: 0,
        };
        let open = socket.engine_packet().await;
        assert!(open.starts_with('0'), "expected Engine.IO open, got {open}");
        socket
            .send_text(&format!("40{}", json!({"token": user.token})))
            .await;
        let connect = socket.engine_packet().await;
        assert!(connect.starts_with("40"), "not connected: {connect}");
        socket
    }
}

impl SocketIo {
    async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a Socket.IO packet");
    }

    /// The next Engine.IO packet other than a ping (which is answered).
    async fn engine_packet(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("the server answers in time");
            match frame {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    self.send_text("3").await;
                }
                Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("the Socket.IO connection ended: {other:?}"),
            }
        }
    }

    /// The next Socket.IO packet: its type, acknowledgement id and data.
    async fn packet(&mut self) -> (u8, Option<u64>, Value) {
        let text = self.engine_packet().await;
        let packet = text
            .strip_prefix('4')
            .unwrap_or_else(|| panic!("expected an Engine.IO message, got {text}"));
        let kind = packet.as_bytes()[0];
        let rest = &packet[1..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let id = rest[..digits].parse().ok();
        let data = match &rest[digits..] {
            "" => Value::Null,
            json => serde_json::from_str(json).expect("Socket.IO data is JSON"),
        };
        (kind, id, data)
    }

    /// Emits `event` and returns its acknowledgement; events arriving meanwhile are kept.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        self.next_ack += 1;
        let id = self.next_ack;
        self.send_text(&format!("42{id}{}", json!([event, data])))
            .await;
        loop {
            match self.packet().await {
                (b'3', Some(ack), data) if ack == id => return data[0].clone(),
                (b'2', _, data) => self.keep(data),
                other => panic!("expected the acknowledgement of {event}, got {other:?}"),
            }
        }
    }

    fn keep(&mut self, data: Value) {
        let name = data[0].as_str().expect("an event name").to_owned();
        self.events.push_back((name, data[1].clone()));
    }

    /// The next event the server sent, whatever it is.
    pub async fn next_event(&mut self) -> (String, Value) {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            match self.packet().await {
                (b'2', _, data) => self.keep(data),
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The payload of the next `name` event, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (event, payload) = self.next_event().await;
            if event == name {
                return payload;
            }
        }
    }
}
