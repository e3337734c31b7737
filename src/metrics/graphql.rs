//! GraphQL operations by transport, type and outcome: an async-graphql extension, so every
//! operation the schema runs is counted once, whichever door it came through.
//!
//! - `transport`: `http` (the schema's `execute`: `POST` and `GET /graphql`) or `ws` (its
//!   `execute_stream`: the WebSocket endpoint). The renderings of room events for subscribers
//!   (`ws::fanout`, marked by [`InjectedEvent`]) are not operations and are not counted here
//!   (`confab_event_renders` counts them).
//! - `type`: `query`, `mutation`, `subscription`, or `unknown` when the document never parsed.
//! - `outcome`: `ok` when the response has no error, else the first error's `extensions.code`
//!   when it is one of Confab's [`Code`]s, else `error`.
//!
//! When it is counted: a query or mutation when its response is ready; a subscription at its
//! first response (a refusal, or its first event), or, when it streams without one (its feed
//! handed to the shared renderings, or it ended first), when async-graphql lets go of it, which
//! is as it starts streaming. Documents refused before they reach the schema (too large, too
//! deep, unparsable: `graphql::document`) are counted by their transport with [`refused`].

use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::{
    Response, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
        NextPrepareRequest, NextRequest, NextSubscribe, NextValidation,
    },
    parser::types::{ExecutableDocument, OperationType},
};
use futures_util::{StreamExt as _, stream::BoxStream};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    error::Code,
    graphql::{AppSchema, document, live::InjectedEvent},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    transport: &'static str,
    r#type: &'static str,
    outcome: &'static str,
}

/// The operation counts; cheap to clone (handles to the same series). Also schema data, so
/// the transports can count what they refuse before the schema runs ([`refused`]).
#[derive(Clone, Default)]
pub struct OperationCounts(Family<Operation, Counter>);

impl OperationCounts {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "confab_graphql_operations",
            "GraphQL operations, by transport (http, ws), type (query, mutation, subscription, unknown) and outcome (ok, or the first error's code)",
            self.0.clone(),
        );
    }

    fn count(&self, transport: &'static str, kind: &'static str, outcome: &'static str) {
        self.0
            .get_or_create(&Operation {
                transport,
                r#type: kind,
                outcome,
            })
            .inc();
    }
}

/// Counts a request refused before it reached the schema (by `graphql::document::check`).
pub fn refused(schema: &AppSchema, transport: &'static str, error: &ServerError) {
    if let Some(counts) = schema.data::<OperationCounts>() {
        counts.count(transport, "unknown", outcome(std::slice::from_ref(error)));
    }
}

/// `ok`, or the first error's code when it is one of Confab's, else `error`.
fn outcome(errors: &[ServerError]) -> &'static str {
    let Some(first) = errors.first() else {
        return "ok";
    };
    let code = first.extensions.as_ref().and_then(|x| x.get("code"));
    match code {
        Some(async_graphql::Value::String(code)) => Code::ALL
            .iter()
            .map(|c| c.as_str())
            .find(|known| known == code)
            .unwrap_or("error"),
        _ => "error",
    }
}

fn type_label(kind: OperationType) -> &'static str {
    match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// The extension (`SchemaBuilder::extension`): one observer per request.
pub struct OperationMetrics(pub OperationCounts);

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Observer(Arc::new(Observed {
            counts: self.0.clone(),
            state: Mutex::default(),
        })))
    }
}

struct Observer(Arc<Observed>);

/// One request as seen so far.
struct Observed {
    counts: OperationCounts,
    state: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    transport: Option<&'static str>,
    operation_name: Option<String>,
    kind: Option<OperationType>,
    /// A rendering of a room event, not an operation.
    render: bool,
    /// The document passed validation.
    valid: bool,
    counted: bool,
}

impl Observed {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn transport(&self, transport: &'static str) {
        self.seen().transport.get_or_insert(transport);
    }

    /// Counts the operation with the outcome of `response`, once.
    fn answered(&self, response: &Response) {
        let mut seen = self.seen();
        if seen.render || seen.counted {
            return;
        }
        seen.counted = true;
        let kind = seen.kind.map_or("unknown", type_label);
        self.counts.count(
            seen.transport.unwrap_or("http"),
            kind,
            outcome(&response.errors),
        );
    }
}

impl Drop for Observed {
    /// A valid subscription let go of without a response: it started, and streamed from its
    /// feed (or ended before an event).
    fn drop(&mut self) {
        let seen = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !seen.render
            && !seen.counted
            && seen.valid
            && seen.kind == Some(OperationType::Subscription)
        {
            self.counts
                .count(seen.transport.unwrap_or("ws"), "subscription", "ok");
        }
    }
}

#[async_trait::async_trait]
impl Extension for Observer {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        self.0.transport("http");
        let response = next.run(ctx).await;
        self.0.answered(&response);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        self.0.transport("ws");
        let observed = self.0.clone();
        next.run(ctx, stream)
            .inspect(move |response| observed.answered(response))
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        self.0.seen().operation_name = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // The request's own data is attached by now.
        if ctx.data_opt::<InjectedEvent>().is_some() {
            self.0.seen().render = true;
        }
        let parsed = next.run(ctx, query, variables).await;
        if let Ok(document) = &parsed {
            let mut seen = self.0.seen();
            seen.kind = document::operation_kind(document, seen.operation_name.as_deref());
        }
        parsed
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_ok() {
            self.0.seen().valid = true;
        }
        result
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let response = next.run(ctx, operation_name).await;
        self.0.answered(&response);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Code::ALL` holds every code: a new variant fails to compile here until it is listed.
    #[test]
    fn every_code_can_be_an_outcome() {
        let position = |code: Code| match code {
            Code::Unauthenticated => 0,
            Code::Forbidden => 1,
            Code::NotFound => 2,
            Code::BadUserInput => 3,
            Code::Conflict => 4,
            Code::RateLimited => 5,
            Code::InternalServerError => 6,
            Code::BadRequest => 7,
            Code::PayloadTooLarge => 8,
            Code::MethodNotAllowed => 9,
            Code::UnsupportedMediaType => 10,
            Code::QueryTooComplex => 11,
            Code::GraphqlParseFailed => 12,
            Code::GraphqlValidationFailed => 13,
            Code::ServiceUnavailable => 14,
        };
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(position(code), i, "{code}");
        }
    }

    #[test]
    fn outcomes_are_ok_a_known_code_or_error() {
        assert_eq!(outcome(&[]), "ok");
        let mut known = ServerError::new("no", None);
        known
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", "UNAUTHENTICATED");
        assert_eq!(outcome(&[known]), "UNAUTHENTICATED");
        let mut invented = ServerError::new("no", None);
        invented
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", "SOMETHING_A_CLIENT_CHOSE");
        assert_eq!(outcome(&[invented]), "error");
        assert_eq!(outcome(&[ServerError::new("no code", None)]), "error");
    }
}
