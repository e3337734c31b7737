//! GraphQL over HTTP: `POST /graphql` (JSON, single or batched), `GET /graphql` for queries in
//! the URL, and GraphiQL for a browser.
//!
//! Responses are `application/graphql-response+json` when the client accepts it (then a request
//! that fails before execution is a 400, as the GraphQL-over-HTTP spec says), else
//! `application/json` with 200.

use async_graphql::{
    BatchRequest, BatchResponse, Request, Variables,
    parser::{
        parse_query,
        types::{DocumentOperations, OperationType},
    },
};
use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::ws::GraphqlState;
use crate::auth::Caller;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
/// Most operations one batched POST may hold: each is checked against the complexity limit on
/// its own, so the batch length bounds what one request can cost.
const MAX_BATCH: usize = 10;

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|part| part.trim().starts_with(media)))
}

fn caller(ctx: &GraphqlState, headers: &HeaderMap) -> Caller {
    Caller::from_authorization(
        &ctx.tokens,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A request that never reached execution.
fn request_error(status: StatusCode, message: impl Into<String>, headers: &HeaderMap) -> Response {
    let body =
        json!({"errors": [{"message": message.into(), "extensions": {"code": "BAD_REQUEST"}}]});
    let mut response = (status, axum::Json(body)).into_response();
    if accepts(headers, GRAPHQL_RESPONSE) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE),
        );
    }
    response
}

fn respond(headers: &HeaderMap, response: BatchResponse) -> Response {
    let graphql_response = accepts(headers, GRAPHQL_RESPONSE);
    let failed_before_execution = match &response {
        BatchResponse::Single(r) => {
            r.data == async_graphql::Value::Null
                && !r.errors.is_empty()
                && r.errors.iter().all(|e| e.path.is_empty())
        }
        BatchResponse::Batch(_) => false,
    };
    let status = if graphql_response && failed_before_execution {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // A request that never executed has no `data` entry at all (GraphQL over HTTP).
    let encoded = match &response {
        BatchResponse::Single(r) if failed_before_execution => {
            serde_json::to_vec(&json!({ "errors": r.errors }))
        }
        _ => serde_json::to_vec(&response),
    };
    let body = match encoded {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a GraphQL response");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let content_type = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        "application/json"
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /graphql`.
pub async fn post(State(ctx): State<GraphqlState>, headers: HeaderMap, body: Bytes) -> Response {
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
    let batch = batch.data(caller(&ctx, &headers));
    respond(&headers, ctx.schema.execute_batch(batch).await)
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
    if operation_type(&request) == Some(OperationType::Mutation) {
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
    let request = request.data(caller(&ctx, &headers));
    respond(
        &headers,
        BatchResponse::Single(ctx.schema.execute(request).await),
    )
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

fn operation_type(request: &Request) -> Option<OperationType> {
    let document = parse_query(&request.query).ok()?;
    match &document.operations {
        DocumentOperations::Single(op) => Some(op.node.ty),
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
            None => ops.values().next().map(|op| op.node.ty),
        },
    }
}
