//! The GraphQL schema, as a library: no server code here.
//!
//! [`build_schema`] is used by the server, by `confab schema` and by tests. Each domain has its
//! own Query/Mutation/Subscription part, merged here. State reaches resolvers as schema data
//! (the [`ChatService`]) and request data (the [`Caller`]); resolvers only translate between
//! GraphQL and the service.

mod accounts;
pub mod document;
pub mod endpoint;
pub mod http;
mod inbox;
pub mod live;
mod messages;
mod rooms;
pub mod types;
pub mod ws;

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, MergedObject, MergedSubscription, Schema};

use crate::{
    auth::{Caller, ClientIp},
    error::Error,
    metrics::graphql::{OperationCounts, OperationMetrics},
    model::{ObjectId, parse_id},
    service::ChatService,
};

#[derive(MergedObject, Default)]
pub struct Query(
    accounts::AccountQuery,
    rooms::RoomQuery,
    messages::MessageQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    accounts::AccountMutation,
    rooms::RoomMutation,
    messages::MessageMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(messages::MessageSubscription, inbox::InboxSubscription);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The most an operation may cost. A field costs 1 plus what it selects; a list or connection
/// costs 1 plus its page size times what one item selects (see `page_complexity`), so the cost
/// roughly counts the values the response can hold.
///
/// A client's ordinary screen in one request, `me { id username }`, `rooms(first: 50)` with `id
/// name memberCount`, and `messages(last: 100)` with every `Message` field, `sender { id
/// username }`, cursors and `pageInfo`, costs 1,855 (3 + 251 + 1,601): it fits twice over. What
/// the limit is for does not fit: `messages(last: 100) { edges { node { body } } }` costs 301, so
/// a request can read at most 16 such pages (1,600 messages, not 120,000 through 1,200 aliases
/// as when every field cost 1), and `rooms(first: 100)` listing `members(first: 1000)` costs
/// over 100,000.
pub const MAX_COMPLEXITY: usize = 5_000;

/// Builds the schema. With `None` it can only print its SDL (`confab schema`).
pub fn build_schema(service: Option<Arc<ChatService>>) -> AppSchema {
    build_schema_counted(service, OperationCounts::default())
}

/// Builds the schema, counting its operations in `operations` (for `/metrics`).
pub fn build_schema_counted(
    service: Option<Arc<ChatService>>,
    operations: OperationCounts,
) -> AppSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(16)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32)
    .limit_directives(16)
    .extension(ValidationCodes)
    .extension(OperationMetrics(operations.clone()))
    .data(operations);
    if let Some(service) = service {
        builder = builder.data(service);
    }
    builder.finish()
}

/// The schema's SDL, exactly as `schema.graphql` holds it.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

impl ErrorExtensions for Error {
    /// The GraphQL error for a domain error: as `http::error` maps it for every transport.
    fn extend(&self) -> async_graphql::Error {
        let problem = crate::http::Problem::from(self);
        async_graphql::Error::new(problem.message.clone()).extend_with(|_, ext| {
            ext.set("code", problem.code.as_str());
            if let Some(field) = &problem.field {
                ext.set("field", field.as_str());
            }
            if let Some(seconds) = problem.retry_after {
                ext.set("retryAfter", seconds);
            }
        })
    }
}

/// Turns a domain result into a resolver result, mapping the error once.
pub(crate) trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for crate::error::Result<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

static ANONYMOUS: Caller = Caller::Anonymous;

pub(crate) fn service<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a ChatService> {
    ctx.data::<Arc<ChatService>>()
        .map(Arc::as_ref)
        .map_err(|_| Error::internal("the schema was built without a ChatService").extend())
}

pub(crate) fn caller<'a>(ctx: &Context<'a>) -> &'a Caller {
    ctx.data_opt::<Caller>().unwrap_or(&ANONYMOUS)
}

/// The address the request came from (every door sets it; loopback for a schema driven
/// directly).
pub(crate) fn client(ctx: &Context<'_>) -> ClientIp {
    ctx.data_opt::<ClientIp>()
        .copied()
        .unwrap_or_else(ClientIp::local)
}

/// A page as a Relay connection whose cursors are the items' ids.
pub(crate) fn connection<T, I: Into<ObjectId>, N: async_graphql::OutputType>(
    page: crate::model::Page<T>,
    mut edge: impl FnMut(T) -> (I, N),
) -> async_graphql::connection::Connection<String, N> {
    let mut connection =
        async_graphql::connection::Connection::new(page.has_previous, page.has_next);
    connection.edges.extend(page.items.into_iter().map(|item| {
        let (id, node) = edge(item);
        async_graphql::connection::Edge::new(id.into().to_hex(), node)
    }));
    connection
}

/// The page a list field may return: `asked` clamped to `0..=max`, or `default` when the request
/// names none. Out-of-range sizes are refused by the service; here they only must not overflow.
pub(crate) fn page_size(asked: Option<i32>, default: usize, max: usize) -> usize {
    asked.map_or(default, |n| usize::try_from(n).unwrap_or(0).min(max))
}

/// The complexity of a list or connection field returning up to `page` items, each costing
/// `child_complexity` (for a connection that includes `pageInfo`, which is counted per item: a
/// small overestimate). An empty page costs as one item, so no field costs less than the plain
/// `1 + child_complexity`. Saturates at `i32::MAX`, so sums of such costs cannot overflow.
pub(crate) fn page_complexity(page: usize, child_complexity: usize) -> usize {
    const CAP: usize = i32::MAX as usize;
    page.max(1)
        .saturating_mul(child_complexity)
        .saturating_add(1)
        .min(CAP)
}

pub(crate) fn id_arg<T: From<ObjectId>>(
    field: &'static str,
    id: &async_graphql::ID,
) -> async_graphql::Result<T> {
    parse_id(field, id.as_str()).gql()
}

/// Gives the errors async-graphql's own validation makes (which carry no code) the code every
/// other refusal has: `QUERY_TOO_COMPLEX` for its complexity and depth limits,
/// `GRAPHQL_VALIDATION_FAILED` for the rest (an unknown field, a wrong argument type).
struct ValidationCodes;

impl async_graphql::extensions::ExtensionFactory for ValidationCodes {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(ValidationCodes)
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for ValidationCodes {
    async fn validation(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        next: async_graphql::extensions::NextValidation<'_>,
    ) -> Result<async_graphql::ValidationResult, Vec<async_graphql::ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|mut error| {
                    let extensions = error.extensions.get_or_insert_with(Default::default);
                    if extensions.get("code").is_none() {
                        let code = if error.message.starts_with("Query is too complex")
                            || error.message.starts_with("Query is nested too deep")
                        {
                            crate::error::Code::QueryTooComplex
                        } else {
                            crate::error::Code::GraphqlValidationFailed
                        };
                        extensions.set("code", code.as_str());
                    }
                    error
                })
                .collect()
        })
    }
}
