//! GraphQL over HTTP: `POST /graphql` (JSON, single or batched), `GET /graphql` for queries in
//! the URL, and GraphiQL for a browser.
//!
//! Responses are `application/graphql-response+json` when the client accepts it (then a request
//! that fails before execution is a 400, as the GraphQL-over-HTTP spec says), else
//! `application/json` with 200.

use async_graphql::{
    BatchRequest, Request, Response as GraphqlResponse, ServerError, Variables,
    parser::types::OperationType,
};
use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{document, endpoint::GraphqlState};
use crate::{
    auth::{Caller, ClientIp, UserAgent},
    error::Code,
    http::{Problem, auth as edge_auth},
};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
/// Most operations one batched POST may hold: each is checked against the complexity limit on
/// its own, so the batch length bounds what one request can cost.
const MAX_BATCH: usize = 10;
/// Largest answer one request gets, a batch's entries together: past it, a result is replaced by
/// an error, and the rest of a batch is not run (as over a WebSocket, where it bounds one
/// message).
pub const MAX_RESPONSE: usize = super::ws::MAX_OUTGOING;

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|part| part.trim().starts_with(media)))
}

/// The caller the headers name, with their session checked.
async fn caller(ctx: &GraphqlState, headers: &HeaderMap) -> Caller {
    ctx.service
        .authenticate(edge_auth::from_headers(&ctx.tokens, headers))
        .await
}

/// A request that never reached execution.
fn request_error(status: StatusCode, message: impl Into<String>, headers: &HeaderMap) -> Response {
    let mut response = Problem::new(Code::BadRequest, message)
        .with_status(status)
        .graphql_response();
    if accepts(headers, GRAPHQL_RESPONSE) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE),
        );
    }
    response
}

/// What a POST or GET answers: one response, or a batch's, each already encoded.
enum Answer {
    Single(GraphqlResponse),
    Batch(Vec<Vec<u8>>),
}

fn respond(headers: &HeaderMap, response: Answer) -> Response {
    let graphql_response = accepts(headers, GRAPHQL_RESPONSE);
    let failed_before_execution = match &response {
        Answer::Single(r) => {
            r.data == async_graphql::Value::Null
                && !r.errors.is_empty()
                && r.errors.iter().all(|e| e.path.is_empty())
        }
        Answer::Batch(_) => false,
    };
    let status = if graphql_response && failed_before_execution {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // A request that never executed has no `data` entry at all (GraphQL over HTTP).
    let body = match &response {
        Answer::Single(r) if failed_before_execution => encode(&json!({ "errors": r.errors })),
        Answer::Single(r) => encode(r),
        Answer::Batch(parts) => {
            // Each entry was encoded (and capped) as it ran: see `post`.
            let mut body = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 16);
            body.push(b'[');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(part);
            }
            body.push(b']');
            body
        }
    };
    let content_type = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        "application/json"
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A response as JSON, or an error in its place when it is larger than [`MAX_RESPONSE`].
fn encode<T: serde::Serialize>(response: &T) -> Vec<u8> {
    match serde_json::to_vec(response) {
        Ok(body) if body.len() <= MAX_RESPONSE => body,
        Ok(_) => too_large(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a GraphQL response");
            br#"{"errors":[{"message":"internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#.to_vec()
        }
    }
}

fn too_large() -> Vec<u8> {
    json!({"errors": [{
        "message": format!("the result is larger than {MAX_RESPONSE} bytes; ask for less"),
        "extensions": {"code": "BAD_USER_INPUT"}
    }]})
    .to_string()
    .into_bytes()
}

/// `POST /graphql`.
pub async fn post(
    State(ctx): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") && !content_type.starts_with(GRAPHQL_RESPONSE)
    {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as Content-Type: application/json",
            &headers,
        );
    }
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a GraphQL request: {e}"),
                &headers,
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        return request_error(
            StatusCode::BAD_REQUEST,
            format!("a batch may hold at most {MAX_BATCH} operations"),
            &headers,
        );
    }
    let empty = match &batch {
        BatchRequest::Single(r) => r.query.trim().is_empty(),
        BatchRequest::Batch(rs) => rs.is_empty() || rs.iter().any(|r| r.query.trim().is_empty()),
    };
    if empty {
        return request_error(
            StatusCode::BAD_REQUEST,
            "the request has no query",
            &headers,
        );
    }
    let caller = caller(&ctx, &headers).await;
    let agent = edge_auth::user_agent(&headers);
    let response = match batch {
        BatchRequest::Single(request) => {
            Answer::Single(execute(&ctx, request, &caller, client, &agent).await)
        }
        BatchRequest::Batch(requests) => {
            // One after another, as async-graphql runs a batch: each is checked on its own, and
            // once the answers so far are as large as one answer may be, the rest do not run.
            let mut parts = Vec::with_capacity(requests.len());
            let mut size = 0;
            for request in requests {
                let part = if size > MAX_RESPONSE {
                    encode(&GraphqlResponse::from_errors(vec![ServerError::new(
                        format!(
                            "not run: the batch's results are already over {MAX_RESPONSE} bytes"
                        ),
                        None,
                    )]))
                } else {
                    encode(&execute(&ctx, request, &caller, client, &agent).await)
                };
                size += part.len();
                parts.push(part);
            }
            Answer::Batch(parts)
        }
    };
    respond(&headers, response)
}

/// Checks a request's document, then runs it; a refused document is answered as a request
/// error, without executing.
async fn execute(
    ctx: &GraphqlState,
    request: Request,
    caller: &Caller,
    client: ClientIp,
    agent: &UserAgent,
) -> GraphqlResponse {
    match document::check(request) {
        Ok(checked) => {
            let request = checked
                .request
                .data(caller.clone())
                .data(client)
                .data(agent.clone());
            ctx.schema.execute(request).await
        }
        Err(error) => {
            crate::metrics::graphql::refused(&ctx.schema, "http", &error);
            GraphqlResponse::from_errors(vec![error])
        }
    }
}

#[derive(Deserialize)]
struct UrlRequest {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

/// `GET /graphql`: GraphiQL for a browser, else a query from the URL (never a mutation).
pub async fn get(
    State(ctx): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: UrlRequest = match serde_urlencoded_from(raw.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                format!("bad query string: {e}"),
                &headers,
            );
        }
    };
    let Some(query) = params.query.filter(|q| !q.trim().is_empty()) else {
        if accepts(&headers, "text/html") {
            return crate::web::graphiql_page();
        }
        return request_error(
            StatusCode::BAD_REQUEST,
            "the request has no query",
            &headers,
        );
    };
    let variables = match params
        .variables
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => Variables::default(),
        Some(Ok(value)) if value.is_object() => Variables::from_json(value),
        Some(Ok(serde_json::Value::Null)) => Variables::default(),
        _ => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "variables must be a JSON object",
                &headers,
            );
        }
    };
    let mut request = Request::new(query).variables(variables);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    let checked = match document::check(request) {
        Ok(checked) => checked,
        Err(error) => {
            crate::metrics::graphql::refused(&ctx.schema, "http", &error);
            return respond(
                &headers,
                Answer::Single(GraphqlResponse::from_errors(vec![error])),
            );
        }
    };
    if checked.kind == Some(OperationType::Mutation) {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations must be sent with POST",
            &headers,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let request = checked
        .request
        .data(caller(&ctx, &headers).await)
        .data(client)
        .data(edge_auth::user_agent(&headers));
    respond(&headers, Answer::Single(ctx.schema.execute(request).await))
}

fn serde_urlencoded_from(raw: &str) -> Result<UrlRequest, String> {
    let mut params = UrlRequest {
        query: None,
        operation_name: None,
        variables: None,
    };
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let slot = match key.as_ref() {
            "query" => &mut params.query,
            "operationName" => &mut params.operation_name,
            "variables" => &mut params.variables,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("{key} is given twice"));
        }
        *slot = Some(value.into_owned());
    }
    Ok(params)
}
