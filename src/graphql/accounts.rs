//! Registration, login, sessions and the caller's own account.

use async_graphql::{Context, ID, Object, Result};

use super::{
    GqlResult, caller, client, id_arg, service,
    types::{AuthPayload, Presence, Session, User},
};
use crate::auth::UserAgent;

/// What ending a session costs against `MAX_COMPLEXITY`: each is a store write and, the first
/// time, a message to every instance, so one request may end at most a few dozen.
const SESSION_WRITE_COST: usize = super::MAX_COMPLEXITY / 50;

/// About the most JSON `exportMyData` carries: its answer must fit one response
/// (`http::MAX_RESPONSE`, 4 MiB), with room for escaping.
const EXPORT_BYTES: usize = 2 * 1024 * 1024;

/// The `User-Agent` of the request or socket (kept with the session a sign-in starts).
fn agent<'a>(ctx: &Context<'a>) -> Option<&'a str> {
    ctx.data_opt::<UserAgent>().and_then(|a| a.0.as_deref())
}

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.me(caller(ctx)).await.map(User).gql()
    }

    /// The caller's account, sessions, rooms and messages as one JSON document, so they can
    /// leave with their data. The oldest messages up to about 2 MiB (`messagesComplete` says
    /// whether that was all); `GET /me/export` streams every one.
    #[graphql(complexity = 1000)]
    async fn export_my_data(
        &self,
        ctx: &Context<'_>,
    ) -> Result<async_graphql::Json<serde_json::Value>> {
        service(ctx)?
            .export_my_data(caller(ctx), EXPORT_BYTES)
            .await
            .map(async_graphql::Json)
            .gql()
    }

    /// The caller's active sessions, the most recently used first (`--max-sessions-per-user`,
    /// 200 by default).
    #[graphql(
        complexity = "super::page_complexity(crate::service::MAX_SESSIONS_LISTED, child_complexity)"
    )]
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let caller = caller(ctx);
        let current = caller.user().gql()?.session_id;
        let sessions = service(ctx)?.sessions(caller).await.gql()?;
        Ok(sessions
            .into_iter()
            .map(|session| Session {
                current: session.id == current,
                session,
            })
            .collect())
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
        #[graphql(
            desc = "An invitation code, when the server takes new accounts by invitation only."
        )]
        invite_code: Option<String>,
    ) -> Result<AuthPayload> {
        let payload = service(ctx)?
            .register(
                client(ctx),
                agent(ctx),
                &username,
                &password,
                invite_code.as_deref(),
            )
            .await
            .gql()?;
        Ok(payload.into())
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
            .login(client(ctx), agent(ctx), &username, &password)
            .await
            .gql()?;
        Ok(payload.into())
    }

    /// Trades a refresh token for new tokens; the one presented is spent. A spent one presented
    /// again revokes its session (someone else holds a copy) and is `UNAUTHENTICATED`.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> Result<AuthPayload> {
        let payload = service(ctx)?
            .refresh_session(client(ctx), &refresh_token)
            .await
            .gql()?;
        Ok(payload.into())
    }

    /// Ends the caller's session: its tokens are refused and its sockets close, everywhere.
    #[graphql(complexity = "SESSION_WRITE_COST")]
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        service(ctx)?.logout(caller(ctx)).await.gql()
    }

    /// Ends every session of the caller's, this one included; returns how many.
    #[graphql(complexity = "SESSION_WRITE_COST")]
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = service(ctx)?.logout_everywhere(caller(ctx)).await.gql()?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// Ends one of the caller's sessions (see `sessions`).
    #[graphql(complexity = "SESSION_WRITE_COST")]
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let id = id_arg("id", &id)?;
        service(ctx)?.revoke_session(caller(ctx), id).await.gql()
    }

    /// Deletes the caller's account: sessions ended, rooms left, the name kept from others for
    /// a while. Messages stay, shown as from "deleted user" — or are deleted too with
    /// `purgeMessages`.
    #[graphql(complexity = "PASSWORD_HASH_COST")]
    async fn delete_account(
        &self,
        ctx: &Context<'_>,
        password: String,
        #[graphql(default_with = "Some(false)")] purge_messages: Option<bool>,
    ) -> Result<bool> {
        let purge = purge_messages.unwrap_or(false);
        service(ctx)?
            .delete_account(caller(ctx), client(ctx), &password, purge)
            .await
            .gql()
    }

    /// A new single-use invitation code (server admins only).
    async fn create_invite_code(&self, ctx: &Context<'_>) -> Result<String> {
        service(ctx)?.create_invite_code(caller(ctx)).await.gql()
    }

    /// Suspends an account (server admins only): its sessions end and its sockets close
    /// everywhere, and it cannot sign in until `unsuspendUser`.
    async fn suspend_user(&self, ctx: &Context<'_>, user_id: ID, reason: String) -> Result<bool> {
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .suspend_user(caller(ctx), user, &reason)
            .await
            .gql()
    }

    /// Lifts a suspension (server admins only); false when the account was not suspended.
    async fn unsuspend_user(&self, ctx: &Context<'_>, user_id: ID) -> Result<bool> {
        let user = id_arg("userId", &user_id)?;
        service(ctx)?.unsuspend_user(caller(ctx), user).await.gql()
    }

    /// What the caller shows: AWAY or OFFLINE (invisible) while online, or ONLINE to show what
    /// their sockets say again.
    async fn set_presence(&self, ctx: &Context<'_>, presence: Presence) -> Result<User> {
        service(ctx)?
            .set_presence(caller(ctx), presence.into())
            .await
            .map(User)
            .gql()
    }

    /// Replaces the caller's password and ends every other session of theirs.
    #[graphql(complexity = "2 * PASSWORD_HASH_COST")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        service(ctx)?
            .change_password(caller(ctx), client(ctx), &current_password, &new_password)
            .await
            .gql()
    }
}
