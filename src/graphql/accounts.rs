//! Registration, login and the caller's own account.

use async_graphql::{Context, Object, Result};

use super::{
    GqlResult, caller, client, service,
    types::{AuthPayload, User},
};

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.me(caller(ctx)).await.map(User).gql()
    }
}

/// What one argon2 hash costs against `MAX_COMPLEXITY`: a request may hash at most a few
/// passwords, so aliased `login` fields cannot queue thousands of hashes behind one request.
const PASSWORD_HASH_COST: usize = super::MAX_COMPLEXITY / 5;

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates an account (username: 3–32 of A-Z a-z 0-9 _ . -; password: 8–128 characters)
    /// and signs it in.
    #[graphql(complexity = "PASSWORD_HASH_COST + child_complexity")]
    async fn register(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Result<AuthPayload> {
        let payload = service(ctx)?
            .register(client(ctx), None, &username, &password)
            .await
            .gql()?;
        Ok(AuthPayload {
            token: payload.token,
            user: User(payload.user),
        })
    }

    /// Signs in; the token goes in `Authorization: Bearer <token>`.
    #[graphql(complexity = "PASSWORD_HASH_COST + child_complexity")]
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Result<AuthPayload> {
        let payload = service(ctx)?
            .login(client(ctx), None, &username, &password)
            .await
            .gql()?;
        Ok(AuthPayload {
            token: payload.token,
            user: User(payload.user),
        })
    }
}
