//! The original service's REST routes, as a thin adapter over [`ChatService`].
//!
//! Same paths and request bodies as the Flask service it replaces (`roomname`, `roomID`,
//! `messageID`, `userID`, `message` or `content`), JSON responses, Bearer auth on all but
//! `/register` and `/login`. No rule lives here: every route calls the service the GraphQL API
//! uses, so both behave alike. The OpenAPI document at `/openapi.json` is generated from these
//! handlers and types.

mod body;
mod views;

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRef, FromRequestParts, Path, RawQuery, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use utoipa::OpenApi;

use crate::{
    auth::{Caller, Claims, ClientIp},
    error::Error,
    http::{Json, Problem, auth as edge_auth},
    model::{RoomVisibility, UserId, parse_id},
    service::{ChatService, PageArgs},
};
use body::JsonBody;
use views::*;

/// The REST routes, for any router state that can hand out the service.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<ChatService>: FromRef<S>,
{
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/me/export", get(export))
        .route("/create_room", post(create_room))
        .route("/join_room", post(join_room))
        .route("/send_message", post(send_message))
        .route("/delete_message", post(delete_message))
        .route("/get_messages/{roomID}", get(get_messages))
        .route("/get_rooms", get(get_rooms))
        .route("/mark_read", post(mark_read))
        .route("/openapi.json", get(openapi))
}

/// An error as the REST routes report it: the status its code calls for and
/// `{"error": {"code", "message", "field"?, "retryAfter"?}}`, with fields named as in the
/// request bodies (see `http::error`).
pub struct RestError(Problem);

impl From<Error> for RestError {
    /// An error of the service, which names fields as the GraphQL API does.
    fn from(error: Error) -> Self {
        Self(Problem::from(error).in_legacy_names())
    }
}

impl RestError {
    /// A body that could not be read: too large (413), or otherwise unreadable (400).
    fn too_large_or_invalid(status: StatusCode, reason: String) -> Self {
        let status = match status {
            StatusCode::PAYLOAD_TOO_LARGE => status,
            _ => StatusCode::BAD_REQUEST,
        };
        Self(Problem::from(Error::invalid("body", reason)).with_status(status))
    }

    /// A body that is not JSON (415).
    fn unsupported_media_type() -> Self {
        let error = Error::invalid(
            "Content-Type",
            "send the body as JSON, with Content-Type: application/json",
        );
        Self(Problem::from(error).with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
    }

    /// A mistake in the request as sent, already named in the request's own terms.
    fn in_request(error: Error) -> Self {
        Self(Problem::from(error))
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        self.0.rest_response()
    }
}

type RestResult<T> = Result<T, RestError>;

/// The signed-in caller of a route that needs one (`Authorization: Bearer <token>`).
pub struct SignedIn(Caller, Claims);

impl<S> FromRequestParts<S> for SignedIn
where
    S: Send + Sync,
    Arc<ChatService>: FromRef<S>,
{
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let service = Arc::<ChatService>::from_ref(state);
        let caller = service
            .authenticate(edge_auth::from_headers(service.tokens(), &parts.headers))
            .await;
        let claims = caller.user()?.clone();
        Ok(Self(caller, claims))
    }
}

impl SignedIn {
    /// A `userID` in a body may only name the caller: the token, not the body, says who acts.
    fn check_user_id(&self, user_id: Option<&str>) -> Result<(), Error> {
        let Some(user_id) = user_id else {
            return Ok(());
        };
        if parse_id::<UserId>("userID", user_id)? != self.1.user_id {
            return Err(Error::forbidden(
                "userID must be your own id: the access token says who acts",
            ));
        }
        Ok(())
    }
}

/// Register a user.
#[utoipa::path(
    post, path = "/register", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Malformed body or a limit broken", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn register(
    State(service): State<Arc<ChatService>>,
    client: ClientIp,
    JsonBody(body): JsonBody<Credentials>,
) -> RestResult<(StatusCode, Json<RegisterResponse>)> {
    let user = service
        .create_account(
            client,
            &body.username,
            &body.password,
            body.invite_code.as_deref(),
        )
        .await?;
    let response = RegisterResponse {
        message: "user registered".into(),
        user: UserView::from(&user),
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Log in and get an access token.
#[utoipa::path(
    post, path = "/login", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn login(
    State(service): State<Arc<ChatService>>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> RestResult<Json<LoginResponse>> {
    let agent = edge_auth::user_agent(&headers);
    let payload = service
        .login(client, agent.0.as_deref(), &body.username, &body.password)
        .await?;
    Ok(Json(payload.into()))
}

/// Trade a refresh token for new tokens; the one sent is spent. One sent again revokes its
/// session.
#[utoipa::path(
    post, path = "/refresh", tag = "accounts",
    request_body = Refresh,
    responses(
        (status = 200, description = "New tokens", body = LoginResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not a valid refresh token (or one already used)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn refresh(
    State(service): State<Arc<ChatService>>,
    client: ClientIp,
    JsonBody(body): JsonBody<Refresh>,
) -> RestResult<Json<LoginResponse>> {
    let payload = service.refresh_session(client, &body.refresh_token).await?;
    Ok(Json(payload.into()))
}

/// End the caller's session: its tokens are refused and its sockets close.
#[utoipa::path(
    post, path = "/logout", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = LogoutResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
async fn logout(
    State(service): State<Arc<ChatService>>,
    signed_in: SignedIn,
) -> RestResult<Json<LogoutResponse>> {
    service.logout(&signed_in.0).await?;
    Ok(Json(LogoutResponse {
        message: "logged out".into(),
    }))
}

/// Download everything of the caller's: account, sessions, rooms and every message they sent
/// (deleted ones excepted), streamed page by page as one JSON document.
#[utoipa::path(
    get, path = "/me/export", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The export, as an attachment", content_type = "application/json"),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
async fn export(
    State(service): State<Arc<ChatService>>,
    signed_in: SignedIn,
) -> RestResult<Response> {
    let head = service.export_account(&signed_in.0).await?;
    // `{…head…, "messages": [` then each page, then `]}`: the head is a JSON object, so its
    // closing brace gives way to the messages.
    let head = head.to_string();
    let open = format!("{},\"messages\":[", head.strip_suffix('}').unwrap_or(&head));
    let caller = signed_in.0;
    let body = async_stream::stream! {
        yield Ok::<_, std::io::Error>(open.into_bytes());
        let mut after = None;
        let mut first = true;
        loop {
            let page = match service.exported_messages(&caller, after, EXPORT_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    // Headers are sent: the broken stream (no closing bracket) tells the client.
                    tracing::warn!(error = %e, "an export stopped");
                    yield Err(std::io::Error::other("the export could not be finished"));
                    return;
                }
            };
            let done = page.len() < EXPORT_PAGE;
            let mut chunk = Vec::new();
            for (id, message) in page {
                if !first {
                    chunk.push(b',');
                }
                first = false;
                chunk.extend(message.to_string().into_bytes());
                after = Some(id);
            }
            yield Ok(chunk);
            if done {
                break;
            }
        }
        yield Ok(b"]}\n".to_vec());
    };
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"confab-export.json\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Messages an export reads per page.
const EXPORT_PAGE: usize = 500;

/// Create a room; its creator becomes a member.
#[utoipa::path(
    post, path = "/create_room", tag = "rooms",
    request_body = CreateRoom,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = RoomResponse),
        (status = 400, description = "Malformed body or a limit broken", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "userID is not the caller's", body = ErrorBody),
        (status = 409, description = "Room name taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn create_room(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    JsonBody(body): JsonBody<CreateRoom>,
) -> RestResult<(StatusCode, Json<RoomResponse>)> {
    caller.check_user_id(body.user_id.as_deref())?;
    let room = service
        .create_room(&caller.0, &body.roomname, RoomVisibility::Public, None)
        .await?;
    let response = RoomResponse {
        message: "room created".into(),
        room: RoomView::from(&room),
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Join a room (joining again changes nothing).
#[utoipa::path(
    post, path = "/join_room", tag = "rooms",
    request_body = JoinRoom,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Joined", body = RoomResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "userID is not the caller's", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn join_room(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    JsonBody(body): JsonBody<JoinRoom>,
) -> RestResult<Json<RoomResponse>> {
    caller.check_user_id(body.user_id.as_deref())?;
    let room_id = parse_id("roomID", &body.room_id)?;
    let room = service.join_room(&caller.0, room_id).await?;
    Ok(Json(RoomResponse {
        message: "joined the room".into(),
        room: RoomView::from(&room),
    }))
}

/// Send a message to a room the caller is a member of. The same `clientId` from the same
/// sender in the same room returns the first message instead of sending a duplicate.
#[utoipa::path(
    post, path = "/send_message", tag = "messages",
    request_body = SendMessage,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Sent (or, for a repeated clientId, the first message)", body = SendResponse),
        (status = 400, description = "Malformed body or a limit broken", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a member, or userID is not the caller's", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn send_message(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    JsonBody(body): JsonBody<SendMessage>,
) -> RestResult<(StatusCode, Json<SendResponse>)> {
    caller.check_user_id(body.user_id.as_deref())?;
    let room_id = parse_id("roomID", &body.room_id)?;
    let message = service
        .send_message(&caller.0, room_id, &body.message, body.client_id.as_deref())
        .await?;
    let view = MessageView::load(&service, message).await?;
    Ok((StatusCode::CREATED, Json(SendResponse { message: view })))
}

/// Delete one of the caller's own messages.
#[utoipa::path(
    post, path = "/delete_message", tag = "messages",
    request_body = DeleteMessage,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeleteResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the author, or userID is not the caller's", body = ErrorBody),
        (status = 404, description = "No such message (in that room)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = ErrorBody),
    )
)]
async fn delete_message(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    JsonBody(body): JsonBody<DeleteMessage>,
) -> RestResult<Json<DeleteResponse>> {
    caller.check_user_id(body.user_id.as_deref())?;
    let message_id = parse_id("messageID", &body.message_id)?;
    let room_id = body
        .room_id
        .as_deref()
        .map(|r| parse_id("roomID", r))
        .transpose()?;
    if let Some(room_id) = room_id {
        // Named a room: the message must be in it. Whether the caller may delete it (its
        // author, or a moderator of the room) is for `delete_message` to say.
        let message = service.message_seen(&caller.0, message_id).await?;
        if message.room_id != room_id {
            return Err(Error::not_found("no such message in that room").into());
        }
    }
    let deleted = service.delete_message(&caller.0, message_id).await?;
    Ok(Json(DeleteResponse {
        message: "message deleted".into(),
        message_id: deleted.id.to_hex(),
    }))
}

/// A room's messages, oldest first: the newest `limit` before `before` (a message id).
#[utoipa::path(
    get, path = "/get_messages/{roomID}", tag = "messages",
    params(
        ("roomID" = String, Path, description = "The room's id (24 hex characters)", pattern = "^[0-9a-fA-F]{24}$"),
        ("limit" = Option<i64>, Query, description = "How many (1 to 100, 50 by default)", minimum = 1, maximum = 100),
        ("before" = Option<String>, Query, description = "Only messages older than this message id", pattern = "^[0-9a-fA-F]{24}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of history, oldest first", body = MessagesResponse),
        (status = 400, description = "A malformed id or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    )
)]
async fn get_messages(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    room_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> RestResult<Json<MessagesResponse>> {
    let Path(room_id) = room_id.map_err(|_| {
        RestError::in_request(Error::invalid("roomID", "must be a 24-character hex id"))
    })?;
    let room_id = parse_id("roomID", &room_id)?;
    let params = body::query(query.as_deref(), &["limit", "before"])?;
    let args = PageArgs {
        last: Some(body::limit(params.get("limit"))?),
        before: params.get("before").cloned(),
        ..PageArgs::default()
    };
    let page = service.messages(&caller.0, room_id, &args).await?;
    let mut messages = Vec::with_capacity(page.items.len());
    for message in page.items {
        messages.push(MessageView::load(&service, message).await?);
    }
    Ok(Json(MessagesResponse { messages }))
}

/// Every room, oldest first: `limit` rooms after `after` (a room id).
#[utoipa::path(
    get, path = "/get_rooms", tag = "rooms",
    params(
        ("limit" = Option<i64>, Query, description = "How many (1 to 100, 50 by default)", minimum = 1, maximum = 100),
        ("after" = Option<String>, Query, description = "Only rooms created after this room id", pattern = "^[0-9a-fA-F]{24}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the room directory, oldest first", body = RoomsResponse),
        (status = 400, description = "A malformed id or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
async fn get_rooms(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    RawQuery(query): RawQuery,
) -> RestResult<Json<RoomsResponse>> {
    let params = body::query(query.as_deref(), &["limit", "after"])?;
    let args = PageArgs {
        first: Some(body::limit(params.get("limit"))?),
        after: params.get("after").cloned(),
        ..PageArgs::default()
    };
    let page = service.rooms(&caller.0, &args).await?;
    let mut rooms = Vec::with_capacity(page.items.len());
    for room in &page.items {
        let mut view = RoomView::from(room);
        if let Some(state) = service.read_state(&caller.0, room.id).await? {
            view.unread_count = Some(state.unread);
            view.mention_count = Some(state.mentions);
        }
        rooms.push(view);
    }
    Ok(Json(RoomsResponse { rooms }))
}

/// Mark a room read up to a message: the caller's read marker moves forward (never back).
#[utoipa::path(
    post, path = "/mark_read", tag = "rooms",
    request_body = MarkRead,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Where the marker stands now", body = ReadStateResponse),
        (status = 400, description = "Malformed body, or no such message in that room", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a member of the room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
    )
)]
async fn mark_read(
    State(service): State<Arc<ChatService>>,
    caller: SignedIn,
    JsonBody(body): JsonBody<MarkRead>,
) -> RestResult<Json<ReadStateResponse>> {
    let room_id = parse_id("roomID", &body.room_id)?;
    let message_id = parse_id("messageID", &body.message_id)?;
    let state = service.mark_read(&caller.0, room_id, message_id).await?;
    Ok(Json(ReadStateResponse {
        message: "marked read".into(),
        room_id: room_id.to_hex(),
        last_read_message_id: state.last_read.map(|id| id.to_hex()),
        unread_count: state.unread,
        mention_count: state.mentions,
    }))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Confab REST compatibility API",
        description = "The original chat service's REST routes, served by Confab. The GraphQL API at /graphql is the full one.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    // Relative: the routes are at the root of the server that serves this document, wherever
    // it is deployed.
    servers((url = "/", description = "The Confab server that serves this document")),
    paths(register, login, refresh, logout, export, create_room, join_room, send_message, delete_message, get_messages, get_rooms, mark_read),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`.
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
