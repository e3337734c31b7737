//! `ChatService`: the one place for chat rules.
//!
//! Transports call it with a [`Caller`] and plain arguments. It checks input limits and who may
//! do what (members read and write a room, authors edit and delete their messages), then commits
//! to the [`Store`]. The store reports the events of committed writes in commit order, and one
//! publisher task puts them on the [`EventBus`] in that order: nothing is announced that is not
//! stored, live events follow message-id order, and a write is announced even when the request
//! that made it is gone. Typing, which is not stored, is published directly.

mod feed;
pub mod limiter;
pub mod limits;

use std::sync::Arc;

use futures_util::Stream;

use crate::{
    auth::{Caller, ClientIp, Passwords, Tokens},
    bus::EventBus,
    error::{Error, Result},
    model::{
        Message, MessageId, Page, PageRequest, Room, RoomEvent, RoomId, User, UserId, parse_id,
    },
    store::{NewMessage, Store, unique_key},
};
use limiter::{Kind, Limiter, Rate, RateLimits};

/// A signed-in user and their access token.
#[derive(Debug, Clone)]
pub struct AuthPayload {
    pub token: String,
    pub user: User,
}

/// Relay-style page arguments as a client sent them, before checking.
#[derive(Debug, Clone, Default)]
pub struct PageArgs {
    pub first: Option<i64>,
    pub after: Option<String>,
    pub last: Option<i64>,
    pub before: Option<String>,
}

impl PageArgs {
    /// Forward paging only (`first`, `after`), as the room lists take it.
    pub fn forward(first: Option<i32>, after: Option<String>) -> Self {
        Self {
            first: first.map(i64::from),
            after,
            ..Self::default()
        }
    }

    /// Checks the arguments. With none given, `default` says which end a page starts from.
    pub fn resolve(&self, default: PageRequest) -> Result<PageRequest> {
        let cursor = |field: &'static str, value: &Option<String>| {
            value.as_deref().map(|v| parse_id(field, v)).transpose()
        };
        let after = cursor("after", &self.after)?;
        let before = cursor("before", &self.before)?;
        match (self.first, self.last) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "last",
                "give either first or last, not both",
            )),
            (Some(_), None) | (None, None)
                if before.is_some() && (self.first.is_some() || after.is_some()) =>
            {
                Err(Error::invalid(
                    "before",
                    "page forwards with first/after or backwards with last/before",
                ))
            }
            (None, Some(_)) if after.is_some() => Err(Error::invalid(
                "after",
                "page forwards with first/after or backwards with last/before",
            )),
            (Some(first), None) => Ok(PageRequest::Forward {
                after,
                first: limits::page_size("first", Some(first))?,
            }),
            (None, Some(last)) => Ok(PageRequest::Backward {
                before,
                last: limits::page_size("last", Some(last))?,
            }),
            (None, None) if after.is_some() => Ok(PageRequest::Forward {
                after,
                first: limits::PAGE_DEFAULT,
            }),
            (None, None) if before.is_some() => Ok(PageRequest::Backward {
                before,
                last: limits::PAGE_DEFAULT,
            }),
            (None, None) => Ok(default),
        }
    }
}

/// What bounds each account and each client address: rates, and how many rooms one may join.
pub struct Guards {
    pub rates: RateLimits,
    /// Where the rates are counted: this process, or Redis for every instance.
    pub limiter: Arc<dyn Limiter>,
    /// Most rooms one user may be a member of.
    pub max_rooms_per_user: usize,
}

impl Guards {
    /// No rate limits, counted in memory; the default room cap.
    pub fn off() -> Self {
        Self {
            rates: RateLimits::off(),
            limiter: limiter::memory::MemoryLimiter::new(),
            max_rooms_per_user: limits::MAX_ROOMS_PER_USER,
        }
    }
}

pub struct ChatService {
    /// The task that puts the store's committed events on the bus, in commit order.
    publisher: Option<tokio::task::AbortHandle>,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    passwords: Passwords,
    tokens: Tokens,
    users: UserCache,
    guards: Guards,
}

impl ChatService {
    /// Builds the service and starts publishing the store's events (so: inside a runtime).
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        tokens: Tokens,
        guards: Guards,
    ) -> Self {
        // The one publisher: it ends when the store's event channel closes, or with the service.
        let publisher = store.take_events().map(|mut events| {
            let bus = bus.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    bus.publish(event).await;
                }
            })
            .abort_handle()
        });
        Self {
            publisher,
            store,
            bus,
            passwords: Passwords::new(),
            tokens,
            users: UserCache::new(),
            guards,
        }
    }

    /// Takes one of `key`'s allowance of `kind`, or says how long to wait.
    async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<()> {
        if !self.guards.rates.enabled {
            return Ok(());
        }
        self.guards
            .limiter
            .take(kind, rate, key)
            .await
            .map_err(|wait| {
                let what = match kind {
                    Kind::LoginsPerIp => "login attempts from your address",
                    Kind::RegistrationsPerIp => "accounts registered from your address",
                    Kind::Messages => "messages",
                    Kind::RoomsCreated => "rooms created",
                    Kind::Joins => "rooms joined",
                    Kind::TypingStarted | Kind::TypingStopped => "typing notices",
                };
                Error::rate_limited(format!("too many {what} (at most {rate})"), wait)
            })
    }

    /// Which queue a password hash waits in: one per client address while limits are on, so
    /// that a flood from one address waits behind itself, not in front of everyone else.
    fn hash_queue(&self, client: ClientIp) -> Option<String> {
        self.guards.rates.enabled.then(|| client.rate_key())
    }

    /// Refuses a new membership beyond the most rooms one user may be in.
    async fn room_allowance(&self, user: UserId) -> Result<()> {
        let max = self.guards.max_rooms_per_user;
        if self.store.room_count_of(user).await? >= max as u64 {
            return Err(Error::forbidden(format!(
                "you are a member of {max} rooms, the most one account may be; leave one first"
            )));
        }
        Ok(())
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The event bus's state, for `/readyz`.
    pub fn bus_health(&self) -> &'static str {
        self.bus.health()
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
    }

    // --- accounts ---

    pub async fn register(
        &self,
        client: ClientIp,
        username: &str,
        password: &str,
    ) -> Result<AuthPayload> {
        let username = limits::username(username)?;
        limits::password(password)?;
        let rates = &self.guards.rates;
        self.take(
            Kind::RegistrationsPerIp,
            rates.registrations_per_ip,
            &client.rate_key(),
        )
        .await?;
        let hash = self
            .passwords
            .hash(password, self.hash_queue(client))
            .await?;
        let user = self.store.create_user(&username, &hash).await?;
        self.users.put(&user);
        Ok(AuthPayload {
            token: self.tokens.issue(&user)?,
            user,
        })
    }

    /// Signs a user in. Failures are counted per account (whether or not it exists, so the
    /// answer says nothing of which names do): past the limit, every login of that account is
    /// refused for a while, the right password included, doubling with each further failure.
    pub async fn login(
        &self,
        client: ClientIp,
        username: &str,
        password: &str,
    ) -> Result<AuthPayload> {
        // Shapes that can never exist are refused at once; every other miss costs one hash.
        let (Ok(username), Ok(())) = (limits::username(username), limits::password(password))
        else {
            return Err(Error::Unauthenticated("wrong username or password".into()));
        };
        let rates = &self.guards.rates;
        self.take(Kind::LoginsPerIp, rates.logins_per_ip, &client.rate_key())
            .await?;
        let account = unique_key(&username);
        if rates.enabled {
            let wait = self
                .guards
                .limiter
                .locked_for(rates.login_failures, &account)
                .await;
            if !wait.is_zero() {
                return Err(Error::rate_limited(
                    "too many failed logins for this account; wait before trying again",
                    wait,
                ));
            }
        }
        let found = self.store.credentials(&username).await?;
        let hash = found.as_ref().map(|c| c.password_hash.as_str());
        if !self
            .passwords
            .verify(password, hash, self.hash_queue(client))
            .await?
        {
            if rates.enabled {
                self.guards
                    .limiter
                    .failed(rates.login_failures, &account)
                    .await;
            }
            return Err(Error::Unauthenticated("wrong username or password".into()));
        }
        if rates.enabled {
            self.guards.limiter.succeeded(&account).await;
        }
        let Some(credentials) = found else {
            return Err(Error::Unauthenticated("wrong username or password".into()));
        };
        let user = credentials.user;
        self.users.put(&user);
        Ok(AuthPayload {
            token: self.tokens.issue(&user)?,
            user,
        })
    }

    /// The caller's own account.
    pub async fn me(&self, caller: &Caller) -> Result<User> {
        let id = caller.user_id()?;
        self.user(id)
            .await
            .map_err(|_| Error::Unauthenticated("this account no longer exists".into()))
    }

    /// A user by id (users never change, so this is served from a cache when it can be).
    pub async fn user(&self, id: UserId) -> Result<User> {
        if let Some(user) = self.users.get(id) {
            return Ok(user);
        }
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| Error::not_found("user not found"))?;
        self.users.put(&user);
        Ok(user)
    }

    // --- rooms ---

    pub async fn create_room(&self, caller: &Caller, name: &str) -> Result<Room> {
        let user = caller.user_id()?;
        let name = limits::room_name(name)?;
        let rates = &self.guards.rates;
        self.take(Kind::RoomsCreated, rates.rooms_created, &user.to_hex())
            .await?;
        self.room_allowance(user).await?;
        self.store.create_room(&name, user).await
    }

    pub async fn room(&self, caller: &Caller, id: RoomId) -> Result<Option<Room>> {
        caller.user()?;
        self.store.room(id).await
    }

    /// The room directory, oldest first.
    pub async fn rooms(&self, caller: &Caller, page: &PageArgs) -> Result<Page<Room>> {
        caller.user()?;
        let page = page.resolve(PageRequest::Forward {
            after: None,
            first: limits::PAGE_DEFAULT,
        })?;
        self.store.rooms(page).await
    }

    /// The rooms the caller is a member of, oldest room first.
    pub async fn my_rooms(&self, caller: &Caller, page: &PageArgs) -> Result<Page<Room>> {
        let user = caller.user_id()?;
        let page = page.resolve(PageRequest::Forward {
            after: None,
            first: limits::PAGE_DEFAULT,
        })?;
        self.store.rooms_of(user, page).await
    }

    pub async fn join_room(&self, caller: &Caller, room: RoomId) -> Result<Room> {
        let me = self.me(caller).await?;
        self.take(Kind::Joins, self.guards.rates.joins, &me.id.to_hex())
            .await?;
        let found = self.existing_room(room).await?;
        if !self.store.is_member(room, me.id).await? {
            self.room_allowance(me.id).await?;
        }
        self.store.add_member(room, me.id).await?;
        Ok(found)
    }

    /// Leaves a room; `false` when the caller was not a member.
    pub async fn leave_room(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let me = self.me(caller).await?;
        self.existing_room(room).await?;
        Ok(self.store.remove_member(room, me.id).await?.changed)
    }

    pub async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        self.store
            .members(room, limit.min(limits::MEMBERS_MAX))
            .await
    }

    pub async fn member_count(&self, room: RoomId) -> Result<u64> {
        self.store.member_count(room).await
    }

    // --- messages ---

    /// A page of a room's history (members only), newest page when no arguments are given.
    pub async fn messages(
        &self,
        caller: &Caller,
        room: RoomId,
        page: &PageArgs,
    ) -> Result<Page<Message>> {
        let page = page.resolve(PageRequest::Backward {
            before: None,
            last: limits::PAGE_DEFAULT,
        })?;
        self.require_member(caller, room).await?;
        self.store.messages(room, page).await
    }

    pub async fn send_message(
        &self,
        caller: &Caller,
        room: RoomId,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Message> {
        limits::body(body)?;
        if let Some(client_id) = client_id {
            limits::client_id(client_id)?;
        }
        self.take_message(caller).await?;
        let sender = self.require_member(caller, room).await?;
        let written = self
            .store
            .insert_message(NewMessage {
                room_id: room,
                sender_id: sender,
                body: body.to_owned(),
                client_id: client_id.map(str::to_owned),
            })
            .await?;
        Ok(written.value)
    }

    pub async fn edit_message(
        &self,
        caller: &Caller,
        id: MessageId,
        body: &str,
    ) -> Result<Message> {
        limits::body(body)?;
        self.take_message(caller).await?;
        self.own_message(caller, id).await?;
        self.store.edit_message(id, body).await
    }

    /// Deletes one of the caller's messages, leaving a tombstone. Deleting again is a no-op.
    pub async fn delete_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        self.take_message(caller).await?;
        self.own_message(caller, id).await?;
        Ok(self.store.delete_message(id).await?.value)
    }

    /// One message write (a send, an edit, a deletion) against the caller's allowance.
    async fn take_message(&self, caller: &Caller) -> Result<()> {
        let user = caller.user_id()?;
        self.take(Kind::Messages, self.guards.rates.messages, &user.to_hex())
            .await
    }

    /// Tells the room the caller is (or stopped) typing. Not stored. Coalesced: at most one
    /// "typing" and one "stopped" per user and room every `typing_every`; the rest are dropped
    /// (the caller still hears `true`, since the room already knows).
    pub async fn set_typing(&self, caller: &Caller, room: RoomId, typing: bool) -> Result<()> {
        self.require_member(caller, room).await?;
        let user = self.me(caller).await?;
        let every = self.guards.rates.typing_every;
        let once = Rate {
            count: std::num::NonZeroU32::MIN,
            period: every,
        };
        let kind = if typing {
            Kind::TypingStarted
        } else {
            Kind::TypingStopped
        };
        let key = format!("{}:{}", user.id.to_hex(), room.to_hex());
        if self.take(kind, once, &key).await.is_err() {
            return Ok(());
        }
        self.bus
            .publish(RoomEvent::Typing {
                room_id: room,
                user,
                typing,
            })
            .await;
        Ok(())
    }

    /// The live events of a room (members only). With `after`, every message created after that
    /// message is replayed from the store first, with no gap and no duplicate.
    pub async fn room_events(
        &self,
        caller: &Caller,
        room: RoomId,
        after: Option<MessageId>,
    ) -> Result<impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static + use<>> {
        let me = self.require_member(caller, room).await?;
        if let Some(after) = after {
            match self.store.message(after).await? {
                Some(message) if message.room_id == room => {}
                _ => {
                    return Err(Error::invalid(
                        "after",
                        "no message with this id in this room",
                    ));
                }
            }
        }
        // The feed is taken before anything is read from the store: see `feed`.
        let subscription = self.bus.subscribe(room);
        // Where the feed starts: every change numbered up to `head.seq` is in the store; a
        // subscription without `after` starts after the newest message stored now.
        let head = self.store.room_head(room).await?;
        let start = after
            .or(head.last_message)
            .unwrap_or_else(|| MessageId::from_bytes([0; 12]));
        Ok(feed::room_feed(
            self.store.clone(),
            subscription,
            feed::Start {
                room,
                subscriber: me,
                after: start,
                seq: head.seq,
                replay: after.is_some(),
            },
        ))
    }

    async fn existing_room(&self, room: RoomId) -> Result<Room> {
        self.store
            .room(room)
            .await?
            .ok_or_else(|| Error::not_found("room not found"))
    }

    /// The caller's id when they are a member of `room`; `NOT_FOUND` for no such room.
    async fn require_member(&self, caller: &Caller, room: RoomId) -> Result<UserId> {
        let user = caller.user_id()?;
        if self.store.is_member(room, user).await? {
            return Ok(user);
        }
        self.existing_room(room).await?;
        Err(Error::forbidden(
            "join the room first: only members may do this",
        ))
    }

    /// One of the caller's own messages (tombstones included); `FORBIDDEN` for another's.
    pub async fn own_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let user = caller.user_id()?;
        let message = self
            .store
            .message(id)
            .await?
            .ok_or_else(|| Error::not_found("message not found"))?;
        if message.sender_id != user {
            return Err(Error::forbidden("only the author may change a message"));
        }
        Ok(message)
    }
}

impl Drop for ChatService {
    fn drop(&mut self) {
        if let Some(publisher) = &self.publisher {
            publisher.abort();
        }
    }
}

/// Users never change once created, so they are cached by id, the least used going first when
/// the cache is full.
struct UserCache(moka::sync::Cache<UserId, User>);

impl UserCache {
    const CAPACITY: u64 = 100_000;

    fn new() -> Self {
        Self(moka::sync::Cache::new(Self::CAPACITY))
    }

    fn get(&self, id: UserId) -> Option<User> {
        self.0.get(&id)
    }

    fn put(&self, user: &User) {
        self.0.insert(user.id, user.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        first: Option<i64>,
        after: Option<&str>,
        last: Option<i64>,
        before: Option<&str>,
    ) -> PageArgs {
        PageArgs {
            first,
            after: after.map(Into::into),
            last,
            before: before.map(Into::into),
        }
    }

    #[test]
    fn page_arguments() {
        let id = "0123456789abcdef01234567";
        let oid = crate::model::ObjectId::parse_str(id).unwrap();
        let default = PageRequest::Backward {
            before: None,
            last: 50,
        };
        assert_eq!(
            args(None, None, None, None).resolve(default).unwrap(),
            default
        );
        assert_eq!(
            args(Some(10), Some(id), None, None)
                .resolve(default)
                .unwrap(),
            PageRequest::Forward {
                after: Some(oid),
                first: 10
            }
        );
        assert_eq!(
            args(None, None, Some(5), Some(id))
                .resolve(default)
                .unwrap(),
            PageRequest::Backward {
                before: Some(oid),
                last: 5
            }
        );
        assert_eq!(
            args(None, None, None, Some(id)).resolve(default).unwrap(),
            PageRequest::Backward {
                before: Some(oid),
                last: 50
            }
        );
        for (bad, field) in [
            (args(Some(1), None, Some(1), None), "last"),
            (args(Some(1), None, None, Some(id)), "before"),
            (args(None, Some(id), Some(1), None), "after"),
            (args(Some(101), None, None, None), "first"),
            (args(None, None, Some(-1), None), "last"),
            (args(None, Some("nope"), None, None), "after"),
        ] {
            assert_eq!(
                bad.resolve(default).unwrap_err().field(),
                Some(field),
                "{bad:?}"
            );
        }
    }
}
