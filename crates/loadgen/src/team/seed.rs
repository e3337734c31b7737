//! The team's shape (rooms and memberships, drawn from a fixed seed) and its seeding through
//! Confab's own store.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use confab::{
    auth::{Passwords, Tokens},
    config::DatabaseUrl,
    model::{RoomId, RoomRole},
    store::{NewMessage, NewRoom, NewSession, Store},
};
use futures_util::{StreamExt as _, stream};

use crate::{
    client::{self, IdBytes, Rng, id_bytes},
    process::JWT_SECRET,
};

/// Rooms each user is in.
const ROOMS_PER_USER: std::ops::RangeInclusive<usize> = 4..=8;
/// Messages each room starts with.
pub(super) const HISTORY: usize = 40;
/// Store writes in flight while seeding (the store's writer batches them).
const SEED_IN_FLIGHT: usize = 1024;

/// Rooms and memberships: `rooms[r]` its members, `of_user[u]` the user's rooms.
pub(super) struct Shape {
    pub(super) rooms: Vec<Vec<u32>>,
    pub(super) of_user: Vec<Vec<u32>>,
}

pub(super) fn shape(users: usize, max_room: usize) -> anyhow::Result<Shape> {
    let mut rng = Rng(0x7ea3_5eed);
    let count = (users / 20).max(8);
    let mut cumulative = Vec::with_capacity(count);
    let mut total = 0.0;
    for r in 0..count {
        total += 1.0 / (r + 1) as f64;
        cumulative.push(total);
    }
    let cap = max_room.min(users).max(1);
    let mut rooms: Vec<Vec<u32>> = vec![Vec::new(); count];
    let mut of_user = Vec::with_capacity(users);
    let span = ROOMS_PER_USER.end() - ROOMS_PER_USER.start() + 1;
    for u in 0..users {
        let k = (ROOMS_PER_USER.start() + rng.below(span)).min(count);
        let mut mine: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..100 * k {
            if mine.len() == k {
                break;
            }
            let x = rng.unit() * total;
            let r = cumulative.partition_point(|&c| c <= x).min(count - 1);
            if !mine.contains(&r) && rooms[r].len() < cap {
                mine.push(r);
                rooms[r].push(u as u32);
            }
        }
        ensure!(!mine.is_empty(), "user {u} found no room with space");
        of_user.push(mine);
    }
    // Rooms nobody drew are not created: renumber the others.
    let mut renumber = vec![u32::MAX; count];
    let mut kept = Vec::new();
    for (r, members) in rooms.into_iter().enumerate() {
        if !members.is_empty() {
            renumber[r] = kept.len() as u32;
            kept.push(members);
        }
    }
    Ok(Shape {
        rooms: kept,
        of_user: of_user
            .into_iter()
            .map(|mine| mine.into_iter().map(|r| renumber[r]).collect())
            .collect(),
    })
}

/// What the seed made: each user's `Bearer` token, each room's id and newest message.
pub(super) struct Seeded {
    pub(super) bearers: Vec<String>,
    pub(super) room_ids: Vec<String>,
    pub(super) newest: Vec<IdBytes>,
}

/// Seeds users, sessions, rooms, memberships and history through Confab's store on the
/// SQLite file at `path`, which no server may have open.
pub(super) async fn seed(path: &Path, shape: &Shape) -> anyhow::Result<Seeded> {
    let store = confab::store::connect(&DatabaseUrl::SqliteFile(path.to_owned()))
        .await
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let store: &dyn Store = &*store;
    // One real hash for every user: nobody signs in with it, but it is a valid one.
    let hash = Passwords::new().hash(client::PASSWORD, None).await?;
    let hash = hash.as_str();
    // The child server checks tokens with JWT_SECRET; these outlive any run.
    let tokens = Tokens::new(JWT_SECRET.as_bytes(), Duration::from_secs(24 * 3600));
    let tokens = &tokens;
    let expires_at = chrono::Utc::now() + chrono::Duration::days(1);
    let users = shape.of_user.len();
    let mut accounts: Vec<(usize, confab::model::User, String)> = stream::iter(0..users)
        .map(|u| async move {
            let user = store.create_user(&format!("lg-t{u}"), hash).await?;
            let mut refresh_hash = [0u8; 32];
            refresh_hash[..8].copy_from_slice(&(u as u64).to_be_bytes());
            let session = store
                .create_session(NewSession {
                    user_id: user.id,
                    refresh_hash,
                    user_agent: Some("loadgen team".into()),
                    expires_at,
                })
                .await?;
            let (token, _) = tokens.issue(&user, session.id)?;
            anyhow::Ok((u, user, format!("Bearer {token}")))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    accounts.sort_unstable_by_key(|(u, _, _)| *u);
    let user_ids: Vec<_> = accounts.iter().map(|(_, user, _)| user.id).collect();
    let user_ids = &user_ids;

    let mut rooms: Vec<(usize, RoomId)> = stream::iter(shape.rooms.iter().enumerate())
        .map(|(r, members)| async move {
            let creator = user_ids[members[0] as usize];
            let room = store
                .create_room(NewRoom::public(format!("lg-team-{r}"), creator))
                .await?;
            anyhow::Ok((r, room.id))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    rooms.sort_unstable_by_key(|(r, _)| *r);
    let room_ids: Vec<RoomId> = rooms.into_iter().map(|(_, id)| id).collect();
    let room_ids = &room_ids;

    let joins = shape.rooms.iter().enumerate().flat_map(|(r, members)| {
        members[1..]
            .iter()
            .map(move |&u| (room_ids[r], user_ids[u as usize]))
    });
    let joined: Vec<anyhow::Result<()>> = stream::iter(joins)
        .map(|(room, user)| async move {
            store.add_member(room, user, RoomRole::Member).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect()
        .await;
    joined.into_iter().collect::<anyhow::Result<()>>()?;

    let posts = (0..shape.rooms.len()).flat_map(|r| (0..HISTORY).map(move |k| (r, k)));
    let written: Vec<anyhow::Result<(usize, IdBytes)>> = stream::iter(posts)
        .map(|(r, k)| async move {
            let members = &shape.rooms[r];
            let message = NewMessage {
                room_id: room_ids[r],
                sender_id: user_ids[members[k % members.len()] as usize],
                body: format!("s{k}"),
                client_id: None,
                mentions: Vec::new(),
            };
            let written = store.insert_message(message).await?;
            anyhow::Ok((r, id_bytes(&written.value.id.to_string())?))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect()
        .await;
    let mut newest = vec![[b'0'; 24]; shape.rooms.len()];
    for result in written {
        let (r, id) = result?;
        newest[r] = newest[r].max(id);
    }
    Ok(Seeded {
        bearers: accounts.into_iter().map(|(_, _, bearer)| bearer).collect(),
        room_ids: room_ids.iter().map(ToString::to_string).collect(),
        newest,
    })
}
