//! The `Store` conformance suite: what every persistence driver must do, checked through the
//! trait alone.
//!
//! Every check is a plain `async fn check(store: Arc<dyn Store>)` that knows nothing of the
//! driver behind the trait. `conformance_suite!` turns every check into a `#[tokio::test]` for
//! one store factory, so a new driver runs the very same suite by adding one instantiation
//! (see the `mongo` note below the SQLite ones). Each test gets a fresh, empty store.

use std::{collections::HashSet, sync::Arc};

#[path = "support/mod.rs"]
mod support;

use chrono::{Duration, Utc};
use confab::{
    error::Error,
    model::{
        Message, MessageId, ObjectId, Page, PageRequest, Room, RoomEvent, RoomId, RoomRole,
        Session, SessionId, User, UserId,
    },
    store::{
        DELETED_USER, Departure, NewMessage, NewRoom, NewSession, RoomHead, Rotation, Store,
        TokenHash, Written,
    },
};

#[path = "store_conformance/inbox.rs"]
mod inbox;
#[path = "store_conformance/read_state.rs"]
mod read_state;
#[path = "store_conformance/teams.rs"]
mod teams;
use inbox::*;
use read_state::*;
use teams::*;

/// Instantiates every check as a test in module `$module`, each with a store from `$factory`.
///
/// `$factory` is a closure returning a future of `Option<(Arc<dyn Store>, Guard)>`: the store,
/// and anything that must outlive it (a temp dir, a database to drop), held until the test
/// ends. `None` means the backend is not reachable here: the test is skipped with a note.
macro_rules! conformance_suite {
    ($module:ident, $factory:expr) => {
        conformance_suite!(@tests $module, $factory, [
            ping_answers,
            users_are_created_and_found_by_id_and_any_case_username,
            usernames_are_unique_in_any_letter_case,
            look_alike_usernames_conflict_and_never_log_in,
            room_creator_becomes_first_member,
            room_names_are_unique_in_any_letter_case,
            look_alike_room_names_conflict,
            rooms_page_forwards_and_backwards,
            add_member_is_idempotent_and_needs_a_room,
            remove_member_reports_whether_it_changed_anything,
            members_come_in_join_order_up_to_the_limit,
            rooms_of_lists_a_users_rooms_oldest_first,
            rooms_of_pages_forwards_and_backwards_and_counts,
            client_id_makes_insert_idempotent_per_sender_and_room,
            messages_page_backwards,
            messages_page_forwards,
            messages_hides_tombstones_but_messages_after_includes_them,
            messages_after_returns_strictly_later_messages_up_to_the_limit,
            edit_message_replaces_the_body_of_live_messages_only,
            delete_message_leaves_a_tombstone_once,
            ids_increase_in_creation_order,
            rooms_never_see_each_others_messages,
            concurrent_inserts_all_succeed_exactly_once,
            concurrent_retries_with_one_client_id_store_one_message,
            concurrent_create_user_with_one_name_has_one_winner,
            concurrent_create_room_with_one_name_has_one_winner,
            committed_writes_are_announced_once_in_commit_order,
            concurrent_inserts_are_announced_in_id_order,
            room_head_names_the_newest_message_and_the_change_number,
            changes_after_lists_each_message_once_at_its_latest_change,
            concurrent_changes_take_consecutive_numbers_in_id_order,
            sessions_are_created_and_read_back,
            rotating_with_the_current_token_renews_the_session,
            a_spent_token_presented_again_revokes_the_session,
            an_unknown_token_or_an_ended_session_is_refused_and_changes_nothing,
            revoking_sessions_says_what_changed,
            sessions_of_lists_active_sessions_most_recently_used_first,
            purge_sessions_deletes_only_ended_sessions,
            concurrent_rotations_with_one_token_rotate_once,
            a_deleted_user_keeps_its_id_and_its_name_until_released,
            the_first_user_is_an_admin_and_standing_follows_grants_and_suspensions,
            an_invitation_is_taken_once_and_can_be_given_back,
            messages_by_lists_a_senders_live_messages_in_id_order,
            delete_room_removes_its_messages_and_frees_its_name,
            a_room_has_a_visibility_a_topic_and_its_creator_as_owner,
            a_direct_room_is_one_per_pair_and_takes_no_name,
            concurrent_direct_rooms_of_one_pair_are_one,
            update_room_changes_what_it_is_given,
            roles_change_only_from_the_role_expected,
            memberships_page_in_join_order,
            ownership_passes_to_the_longest_standing_admin_else_member,
            a_ban_removes_the_member_and_refuses_them_until_lifted,
            a_join_racing_a_ban_ends_with_the_user_out,
            an_invitation_is_one_per_invitee_and_room,
            the_moderation_log_lists_entries_newest_first,
            a_moderators_deletion_names_the_moderator,
            room_updates_and_role_changes_are_announced,
            delete_room_takes_its_bans_invitations_and_log,
            only_public_room_names_are_unique,
            a_new_member_has_read_everything_before_joining,
            unread_counts_others_live_messages_after_the_marker,
            mentions_are_kept_with_the_message_and_counted_after_the_marker,
            a_marker_moves_only_to_a_message_of_its_room,
            counts_stop_at_the_cap,
            a_users_log_counts_up_from_one_per_user_and_reads_back_in_order,
            log_entries_are_announced_on_the_users_channel,
            concurrent_appends_take_every_position_once,
            checkpoints_read_back_for_their_user_only_and_the_newest_are_kept,
        ]);
    };
    (@tests $module:ident, $factory:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some((store, _guard)) = ($factory)().await else {
                        eprintln!("skipped: the {} store is not reachable", stringify!($module));
                        return;
                    };
                    super::$check(store).await;
                }
            )*
        }
    };
}

conformance_suite!(sqlite_memory, || async {
    let store = confab::store::sqlite::SqliteStore::open_in_memory()
        .await
        .expect("open an in-memory SQLite store");
    Some((Arc::new(store) as Arc<dyn Store>, ()))
});

conformance_suite!(sqlite_file, || async {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let store = confab::store::sqlite::SqliteStore::open(&dir.path().join("confab.db"))
        .await
        .expect("open a SQLite file store");
    // The TempDir is the guard: the directory lives until the test ends.
    Some((Arc::new(store) as Arc<dyn Store>, dir))
});

// MongoDB: a fresh database per test on the test server (see tests/support/mongo.rs); skipped
// loudly when there is none, and failing instead under CONFAB_REQUIRE_MONGODB=1 (CI).
conformance_suite!(mongo, || async {
    let uri = support::mongo::server_uri()?;
    let store =
        confab::store::mongo::MongoStore::connect_database(&uri, &support::mongo::fresh_database())
            .await
            .expect("connect to the MongoDB test server");
    Some((store as Arc<dyn Store>, ()))
});

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn user(store: &dyn Store, name: &str) -> User {
    store
        .create_user(name, &format!("hash-of-{name}"))
        .await
        .unwrap_or_else(|e| panic!("create user {name}: {e:?}"))
}

async fn room(store: &dyn Store, name: &str, creator: &User) -> Room {
    store
        .create_room(NewRoom::public(name, creator.id))
        .await
        .unwrap_or_else(|e| panic!("create room {name}: {e:?}"))
}

async fn send(
    store: &dyn Store,
    room: &Room,
    sender: &User,
    body: &str,
    client_id: Option<&str>,
) -> Written<Message> {
    store
        .insert_message(NewMessage {
            room_id: room.id,
            sender_id: sender.id,
            body: body.to_owned(),
            client_id: client_id.map(str::to_owned),
            mentions: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("insert message {body:?}: {e:?}"))
}

/// Sends `count` messages with bodies `{prefix}0`, `{prefix}1`, …, in that order.
async fn send_many(
    store: &dyn Store,
    room: &Room,
    sender: &User,
    prefix: &str,
    count: usize,
) -> Vec<Message> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        sent.push(
            send(store, room, sender, &format!("{prefix}{i}"), None)
                .await
                .value,
        );
    }
    sent
}

/// A user, a room they created, and `count` messages `m0`, `m1`, … they sent there.
async fn room_with_messages(store: &dyn Store, count: usize) -> (User, Room, Vec<Message>) {
    let alice = user(store, "alice").await;
    let general = room(store, "general", &alice).await;
    let sent = send_many(store, &general, &alice, "m", count).await;
    (alice, general, sent)
}

/// No cursor, for [`first`] and [`last`].
const NONE: Option<ObjectId> = None;

fn first(first: usize, after: Option<impl Into<ObjectId>>) -> PageRequest {
    PageRequest::Forward {
        after: after.map(Into::into),
        first,
    }
}

fn last(last: usize, before: Option<impl Into<ObjectId>>) -> PageRequest {
    PageRequest::Backward {
        before: before.map(Into::into),
        last,
    }
}

/// A page of messages as `(bodies, has_previous, has_next)`, to compare in one readable line.
fn bodies(page: &Page<Message>) -> (Vec<&str>, bool, bool) {
    let items = page.items.iter().map(|m| m.body.as_str()).collect();
    (items, page.has_previous, page.has_next)
}

/// A page of rooms as `(names, has_previous, has_next)`.
fn names(page: &Page<Room>) -> (Vec<&str>, bool, bool) {
    let items = page.items.iter().map(|r| r.name.as_str()).collect();
    (items, page.has_previous, page.has_next)
}

fn usernames(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

fn message_bodies(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

async fn page(store: &dyn Store, room: &Room, request: PageRequest) -> Page<Message> {
    store
        .messages(room.id, request)
        .await
        .unwrap_or_else(|e| panic!("messages {request:?}: {e:?}"))
}

/// Every room a user belongs to (one page holds them all in these tests).
async fn rooms_of(store: &dyn Store, user: UserId) -> Vec<Room> {
    let page = store.rooms_of(user, first(100, NONE)).await.unwrap();
    assert!(!page.has_next && !page.has_previous);
    page.items
}

async fn room_page(store: &dyn Store, request: PageRequest) -> Page<Room> {
    store
        .rooms(request)
        .await
        .unwrap_or_else(|e| panic!("rooms {request:?}: {e:?}"))
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    // A new database starts at the current schema (what `/readyz` shows).
    assert_eq!(store.schema_version(), confab::store::SCHEMA_VERSION);
}

async fn users_are_created_and_found_by_id_and_any_case_username(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "Alice").await;
    assert_eq!(
        alice.username, "Alice",
        "the username keeps its letter case"
    );

    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user(ObjectId::new().into()).await.unwrap(), None);

    for spelling in ["Alice", "alice", "ALICE", "aLiCe"] {
        let found = store
            .credentials(spelling)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("credentials({spelling:?}) found nothing"));
        assert_eq!(found.user, alice, "credentials({spelling:?})");
        assert_eq!(
            found.password_hash, "hash-of-Alice",
            "credentials({spelling:?})"
        );
    }
    assert!(store.credentials("bob").await.unwrap().is_none());
    assert!(store.credentials("alic").await.unwrap().is_none());
}

async fn usernames_are_unique_in_any_letter_case(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "Alice").await;
    for taken in ["Alice", "alice", "ALICE"] {
        let err = store.create_user(taken, "other-hash").await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    field: "username",
                    ..
                }
            ),
            "create_user({taken:?}) after \"Alice\": {err:?}"
        );
    }
    // The first user is untouched by the failed attempts.
    let found = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!(found.user, alice);
    assert_eq!(found.password_hash, "hash-of-Alice");
    // Other names are still free.
    user(store, "Alicia").await;
}

/// Usernames are ASCII, but ASCII has look-alikes too: capital I and digit 1 for l, 0 for O,
/// "rn" for "m".
async fn look_alike_usernames_conflict_and_never_log_in(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let arnold = user(store, "arnold").await;
    for taken in [
        "aIice", "a1ice", "ALICE", "AIICE", "amold", "AMOLD", "arn0ld",
    ] {
        let err = store.create_user(taken, "other-hash").await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    field: "username",
                    ..
                }
            ),
            "create_user({taken:?}) after \"alice\" and \"arnold\": {err:?}"
        );
    }
    // A look-alike finds nobody to log in as; the name itself does, in any case.
    for look_alike in ["aIice", "a1ice", "amold"] {
        assert!(
            store.credentials(look_alike).await.unwrap().is_none(),
            "credentials({look_alike:?})"
        );
    }
    assert_eq!(
        store.credentials("ALICE").await.unwrap().unwrap().user,
        alice
    );
    assert_eq!(
        store.credentials("Arnold").await.unwrap().unwrap().user,
        arnold
    );
    // Names that merely resemble each other in part are free.
    user(store, "alice2").await;
    user(store, "arnolds").await;
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

async fn room_creator_becomes_first_member(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let general = room(store, "General", &alice).await;
    assert_eq!(general.name, "General", "the name keeps its letter case");
    assert_eq!(general.created_by, alice.id);

    assert_eq!(store.room(general.id).await.unwrap(), Some(general.clone()));
    assert_eq!(store.room(ObjectId::new().into()).await.unwrap(), None);
    assert!(store.is_member(general.id, alice.id).await.unwrap());
    assert_eq!(store.member_count(general.id).await.unwrap(), 1);
    assert_eq!(
        store.members(general.id, 10).await.unwrap(),
        vec![alice.clone()]
    );
    assert_eq!(rooms_of(store, alice.id).await, vec![general]);
}

async fn room_names_are_unique_in_any_letter_case(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let general = room(store, "General", &alice).await;
    for taken in ["General", "general", "GENERAL"] {
        let err = store
            .create_room(NewRoom::public(taken, bob.id))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Conflict { field: "name", .. }),
            "create_room({taken:?}) after \"General\": {err:?}"
        );
    }
    // A failed creation leaves nothing behind: no room, no membership.
    assert_eq!(rooms_of(store, bob.id).await, vec![]);
    assert_eq!(store.member_count(general.id).await.unwrap(), 1);
    let all = room_page(store, first(10, NONE)).await;
    assert_eq!(all.items, vec![general]);
    room(store, "Generals", &bob).await;
}

async fn look_alike_room_names_conflict(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", &alice).await;
    let modern = room(store, "Modern Art", &alice).await;
    let taken = [
        "Lobby",
        "LOBBY",
        "L0bby",
        "I0bby",
        "1obby",
        // Cyrillic о (U+043E), and Cyrillic а / Greek ο in the other room.
        "l\u{43E}bby",
        // A zero-width space: the service refuses it, and the key ignores it regardless.
        "lob\u{200B}by",
        "rnodern art",
        "MODERN \u{410}RT",
        "m\u{3BF}dern art",
    ];
    for name in taken {
        let err = store
            .create_room(NewRoom::public(name, bob.id))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Conflict { field: "name", .. }),
            "create_room({name:?}) after \"lobby\" and \"Modern Art\": {err:?}"
        );
    }
    // Nothing of the refused rooms is left behind.
    assert_eq!(rooms_of(store, bob.id).await, vec![]);
    let all = room_page(store, first(10, NONE)).await;
    assert_eq!(all.items, vec![lobby, modern]);
    room(store, "lobby 2", &bob).await;
    room(store, "Modern", &bob).await;
}

async fn rooms_page_forwards_and_backwards(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;

    let empty = room_page(store, first(2, NONE)).await;
    assert_eq!(names(&empty), (vec![], false, false), "no rooms yet");

    let mut rooms = Vec::new();
    for name in ["r0", "r1", "r2", "r3", "r4"] {
        rooms.push(room(store, name, &alice).await);
    }
    let id = |i: usize| Some(rooms[i].id);

    // Forwards, 2 at a time.
    let p = room_page(store, first(2, NONE)).await;
    assert_eq!(names(&p), (vec!["r0", "r1"], false, true), "first 2");
    let p = room_page(store, first(2, id(1))).await;
    assert_eq!(
        names(&p),
        (vec!["r2", "r3"], true, true),
        "first 2 after r1"
    );
    let p = room_page(store, first(2, id(3))).await;
    assert_eq!(names(&p), (vec!["r4"], true, false), "first 2 after r3");
    let p = room_page(store, first(2, id(4))).await;
    assert_eq!(names(&p), (vec![], true, false), "first 2 after r4");
    let p = room_page(store, first(5, NONE)).await;
    let all = vec!["r0", "r1", "r2", "r3", "r4"];
    assert_eq!(names(&p), (all.clone(), false, false), "first 5");
    let p = room_page(store, first(50, NONE)).await;
    assert_eq!(names(&p), (all, false, false), "first 50");
    assert_eq!(p.items, rooms, "rooms come back exactly as created");

    // Backwards, 2 at a time.
    let p = room_page(store, last(2, NONE)).await;
    assert_eq!(names(&p), (vec!["r3", "r4"], true, false), "last 2");
    let p = room_page(store, last(2, id(3))).await;
    assert_eq!(
        names(&p),
        (vec!["r1", "r2"], true, true),
        "last 2 before r3"
    );
    let p = room_page(store, last(2, id(1))).await;
    assert_eq!(names(&p), (vec!["r0"], false, true), "last 2 before r1");
}

// ---------------------------------------------------------------------------------------------
// Memberships
// ---------------------------------------------------------------------------------------------

async fn add_member_is_idempotent_and_needs_a_room(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let general = room(store, "general", &alice).await;

    assert!(!store.is_member(general.id, bob.id).await.unwrap());
    let first_join = store
        .add_member(general.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert_eq!(
        first_join,
        Written {
            value: (),
            changed: true
        }
    );
    let second_join = store
        .add_member(general.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert_eq!(
        second_join,
        Written {
            value: (),
            changed: false
        }
    );
    assert!(store.is_member(general.id, bob.id).await.unwrap());
    assert_eq!(store.member_count(general.id).await.unwrap(), 2);

    // The creator is already a member.
    let again = store
        .add_member(general.id, alice.id, RoomRole::Member)
        .await
        .unwrap();
    assert!(!again.changed, "re-adding the creator");
    assert_eq!(store.member_count(general.id).await.unwrap(), 2);

    let err = store
        .add_member(ObjectId::new().into(), bob.id, RoomRole::Member)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "unknown room: {err:?}");
    assert_eq!(rooms_of(store, bob.id).await, vec![general]);
}

async fn remove_member_reports_whether_it_changed_anything(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let general = room(store, "general", &alice).await;
    store
        .add_member(general.id, bob.id, RoomRole::Member)
        .await
        .unwrap();

    let left = store
        .remove_member(general.id, bob.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(
        left,
        Written {
            value: (),
            changed: true
        }
    );
    let left_again = store
        .remove_member(general.id, bob.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(
        left_again,
        Written {
            value: (),
            changed: false
        }
    );
    assert!(!store.is_member(general.id, bob.id).await.unwrap());
    assert!(
        store.is_member(general.id, alice.id).await.unwrap(),
        "others stay"
    );
    assert_eq!(store.member_count(general.id).await.unwrap(), 1);
    assert_eq!(rooms_of(store, bob.id).await, vec![]);
    assert_eq!(store.members(general.id, 10).await.unwrap(), vec![alice]);

    let never = store
        .remove_member(ObjectId::new().into(), bob.id, Departure::Left)
        .await
        .unwrap();
    assert!(!never.changed, "no membership in an unknown room");

    // Leaving is not forever.
    let back = store
        .add_member(general.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert!(back.changed, "rejoining");
    assert!(store.is_member(general.id, bob.id).await.unwrap());
}

async fn members_come_in_join_order_up_to_the_limit(store: Arc<dyn Store>) {
    let store = &*store;
    // Created u1..u4, so ids ascend u1 < u2 < u3 < u4; they join in the opposite order.
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3", "u4"] {
        users.push(user(store, name).await);
    }
    let general = room(store, "general", &users[3]).await;
    for u in [&users[2], &users[1], &users[0]] {
        store
            .add_member(general.id, u.id, RoomRole::Member)
            .await
            .unwrap();
    }

    let all = store.members(general.id, 10).await.unwrap();
    assert_eq!(
        usernames(&all),
        ["u4", "u3", "u2", "u1"],
        "join order, not id order"
    );
    let two = store.members(general.id, 2).await.unwrap();
    assert_eq!(usernames(&two), ["u4", "u3"], "limit 2");
    let none = store.members(general.id, 0).await.unwrap();
    assert_eq!(usernames(&none), Vec::<&str>::new(), "limit 0");
    assert_eq!(store.member_count(general.id).await.unwrap(), 4);

    // Leaving and rejoining puts a member last.
    store
        .remove_member(general.id, users[2].id, Departure::Left)
        .await
        .unwrap();
    store
        .add_member(general.id, users[2].id, RoomRole::Member)
        .await
        .unwrap();
    let all = store.members(general.id, 10).await.unwrap();
    assert_eq!(
        usernames(&all),
        ["u4", "u2", "u1", "u3"],
        "after u3 rejoined"
    );

    let empty = room(store, "quiet", &users[0]).await;
    store
        .remove_member(empty.id, users[0].id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(store.members(empty.id, 10).await.unwrap(), vec![]);
    assert_eq!(store.member_count(empty.id).await.unwrap(), 0);
    assert_eq!(store.member_count(ObjectId::new().into()).await.unwrap(), 0);
}

async fn rooms_of_lists_a_users_rooms_oldest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let r1 = room(store, "r1", &alice).await;
    let r2 = room(store, "r2", &alice).await;
    let r3 = room(store, "r3", &alice).await;

    assert_eq!(rooms_of(store, bob.id).await, vec![]);
    // Bob joins the newest room first; the list is still oldest room first.
    store
        .add_member(r3.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    store
        .add_member(r1.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert_eq!(rooms_of(store, bob.id).await, vec![r1.clone(), r3.clone()]);
    assert_eq!(rooms_of(store, alice.id).await, vec![r1, r2, r3]);
    assert_eq!(rooms_of(store, ObjectId::new().into()).await, vec![]);
}

async fn rooms_of_pages_forwards_and_backwards_and_counts(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(room(store, &format!("r{i}"), &alice).await);
    }
    // Bob is in r0, r1, r3, r4; r2 is alice's alone.
    for i in [4, 0, 3, 1] {
        store
            .add_member(rooms[i].id, bob.id, RoomRole::Member)
            .await
            .unwrap();
    }
    assert_eq!(store.room_count_of(bob.id).await.unwrap(), 4);
    assert_eq!(store.room_count_of(alice.id).await.unwrap(), 5);
    assert_eq!(
        store.room_count_of(ObjectId::new().into()).await.unwrap(),
        0
    );
    let of = |request| async move { store.rooms_of(bob.id, request).await.unwrap() };

    assert_eq!(
        names(&of(first(2, NONE)).await),
        (vec!["r0", "r1"], false, true)
    );
    assert_eq!(
        names(&of(first(2, Some(rooms[1].id))).await),
        (vec!["r3", "r4"], true, false)
    );
    // A cursor that is not one of bob's rooms still pages from where it is.
    assert_eq!(
        names(&of(first(10, Some(rooms[2].id))).await),
        (vec!["r3", "r4"], true, false)
    );
    assert_eq!(
        names(&of(last(3, NONE)).await),
        (vec!["r1", "r3", "r4"], true, false)
    );
    assert_eq!(
        names(&of(last(3, Some(rooms[3].id))).await),
        (vec!["r0", "r1"], false, true)
    );
    assert_eq!(names(&of(first(0, NONE)).await), (vec![], false, true));
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

async fn client_id_makes_insert_idempotent_per_sender_and_room(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let general = room(store, "general", &alice).await;
    let random = room(store, "random", &alice).await;

    let original = send(store, &general, &alice, "hello", Some("c-1")).await;
    assert!(original.changed);
    let m = &original.value;
    assert_eq!(
        (
            m.room_id,
            m.sender_id,
            m.body.as_str(),
            m.client_id.as_deref()
        ),
        (general.id, alice.id, "hello", Some("c-1"))
    );
    assert_eq!((m.edited_at, m.deleted_at), (None, None));
    assert_eq!(store.message(m.id).await.unwrap().as_ref(), Some(m));

    // A retry, even with another body, stores nothing and answers the first message.
    let retry = send(store, &general, &alice, "hello again", Some("c-1")).await;
    assert_eq!(
        retry,
        Written {
            value: original.value.clone(),
            changed: false
        }
    );

    // Another sender or another room with the same client id is another message.
    let from_bob = send(store, &general, &bob, "hi", Some("c-1")).await;
    assert!(from_bob.changed, "same client id, other sender");
    assert_ne!(from_bob.value.id, original.value.id);
    let elsewhere = send(store, &random, &alice, "hello", Some("c-1")).await;
    assert!(elsewhere.changed, "same client id, other room");
    assert_ne!(elsewhere.value.id, original.value.id);

    // Without a client id nothing is deduplicated.
    let plain1 = send(store, &general, &alice, "same", None).await;
    let plain2 = send(store, &general, &alice, "same", None).await;
    assert!(
        plain1.changed && plain2.changed,
        "no client id never dedups"
    );
    assert_ne!(plain1.value.id, plain2.value.id);
    assert_eq!(plain1.value.client_id, None);

    let history = page(store, &general, first(10, NONE)).await;
    assert_eq!(
        bodies(&history),
        (vec!["hello", "hi", "same", "same"], false, false)
    );
    let history = page(store, &random, first(10, NONE)).await;
    assert_eq!(bodies(&history), (vec!["hello"], false, false));
}

async fn messages_page_backwards(store: Arc<dyn Store>) {
    let store = &*store;
    let (_, general, m) = room_with_messages(store, 7).await;
    let before = |i: usize| Some(m[i].id);

    let p = page(store, &general, last(3, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m4", "m5", "m6"], true, false), "last 3");
    let p = page(store, &general, last(3, before(4))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m1", "m2", "m3"], true, true),
        "last 3 before m4"
    );
    let p = page(store, &general, last(3, before(1))).await;
    assert_eq!(bodies(&p), (vec!["m0"], false, true), "last 3 before m1");
    let p = page(store, &general, last(3, before(0))).await;
    assert_eq!(bodies(&p), (vec![], false, true), "last 3 before m0");
    let p = page(store, &general, last(3, before(3))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m0", "m1", "m2"], false, true),
        "exactly the start"
    );

    let all = vec!["m0", "m1", "m2", "m3", "m4", "m5", "m6"];
    let p = page(store, &general, last(7, NONE)).await;
    assert_eq!(bodies(&p), (all.clone(), false, false), "last 7");
    let p = page(store, &general, last(100, NONE)).await;
    assert_eq!(bodies(&p), (all, false, false), "last 100");
    assert_eq!(p.items, m, "messages come back exactly as stored");

    let p = page(store, &general, last(0, NONE)).await;
    assert_eq!(bodies(&p), (vec![], true, false), "last 0");
    let p = page(store, &general, last(0, before(4))).await;
    assert_eq!(bodies(&p), (vec![], true, true), "last 0 before m4");

    // Walking back from the end visits everything once, each page in chronological order.
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let p = page(store, &general, last(3, cursor)).await;
        let mut items = p.items.clone();
        items.extend(walked);
        walked = items;
        if !p.has_previous {
            break;
        }
        cursor = Some(p.items[0].id.object_id());
    }
    assert_eq!(walked, m);
}

async fn messages_page_forwards(store: Arc<dyn Store>) {
    let store = &*store;
    let (alice, general, m) = room_with_messages(store, 7).await;
    let after = |i: usize| Some(m[i].id);

    let p = page(store, &general, first(3, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m0", "m1", "m2"], false, true), "first 3");
    let p = page(store, &general, first(3, after(2))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m3", "m4", "m5"], true, true),
        "first 3 after m2"
    );
    let p = page(store, &general, first(3, after(5))).await;
    assert_eq!(bodies(&p), (vec!["m6"], true, false), "first 3 after m5");
    let p = page(store, &general, first(3, after(6))).await;
    assert_eq!(bodies(&p), (vec![], true, false), "first 3 after m6");
    let p = page(store, &general, first(3, after(3))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m4", "m5", "m6"], true, false),
        "exactly the end"
    );

    let all = vec!["m0", "m1", "m2", "m3", "m4", "m5", "m6"];
    let p = page(store, &general, first(7, NONE)).await;
    assert_eq!(bodies(&p), (all.clone(), false, false), "first 7");
    let p = page(store, &general, first(100, NONE)).await;
    assert_eq!(bodies(&p), (all, false, false), "first 100");

    let p = page(store, &general, first(0, NONE)).await;
    assert_eq!(bodies(&p), (vec![], false, true), "first 0");
    let p = page(store, &general, first(0, after(2))).await;
    assert_eq!(bodies(&p), (vec![], true, true), "first 0 after m2");

    // Walking forwards from the start visits everything once, in order.
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let p = page(store, &general, first(3, cursor)).await;
        walked.extend(p.items.iter().cloned());
        if !p.has_next {
            break;
        }
        cursor = Some(p.items.last().unwrap().id);
    }
    assert_eq!(walked, m);

    let empty = room(store, "empty", &alice).await;
    let p = page(store, &empty, first(3, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec![], false, false),
        "an empty room, forwards"
    );
    let p = page(store, &empty, last(3, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec![], false, false),
        "an empty room, backwards"
    );
}

async fn messages_hides_tombstones_but_messages_after_includes_them(store: Arc<dyn Store>) {
    let store = &*store;
    let (_, general, m) = room_with_messages(store, 6).await;
    for i in [0, 2, 5] {
        store.delete_message(m[i].id, None).await.unwrap();
    }
    // Live: m1, m3, m4.

    let p = page(store, &general, first(10, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["m1", "m3", "m4"], false, false),
        "first 10"
    );
    let p = page(store, &general, last(10, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["m1", "m3", "m4"], false, false),
        "last 10"
    );
    // Tombstones at either end do not count as "more".
    let p = page(store, &general, first(3, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["m1", "m3", "m4"], false, false),
        "first 3"
    );
    let p = page(store, &general, last(3, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m1", "m3", "m4"], false, false), "last 3");
    let p = page(store, &general, first(2, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m1", "m3"], false, true), "first 2");
    let p = page(store, &general, last(2, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m3", "m4"], true, false), "last 2");
    let p = page(store, &general, first(2, Some(m[1].id))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m3", "m4"], true, false),
        "first 2 after m1"
    );
    let p = page(store, &general, last(2, Some(m[3].id))).await;
    assert_eq!(bodies(&p), (vec!["m1"], false, true), "last 2 before m3");
    // A deleted message still works as a cursor.
    let p = page(store, &general, first(10, Some(m[2].id))).await;
    assert_eq!(
        bodies(&p),
        (vec!["m3", "m4"], true, false),
        "after deleted m2"
    );
    let p = page(store, &general, last(10, Some(m[2].id))).await;
    assert_eq!(bodies(&p), (vec!["m1"], false, true), "before deleted m2");

    let replay = store.messages_after(general.id, m[0].id, 10).await.unwrap();
    let ids: Vec<_> = replay.iter().map(|x| x.id).collect();
    assert_eq!(ids, [m[1].id, m[2].id, m[3].id, m[4].id, m[5].id]);
    assert_eq!(message_bodies(&replay), ["m1", "", "m3", "m4", ""]);
    let deleted: Vec<_> = replay.iter().map(Message::is_deleted).collect();
    assert_eq!(deleted, [false, true, false, false, true]);
}

async fn messages_after_returns_strictly_later_messages_up_to_the_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let (alice, general, m) = room_with_messages(store, 6).await;
    // Noise in another room, interleaved.
    let random = room(store, "random", &alice).await;
    let noise = send(store, &random, &alice, "noise", None).await.value;
    let later = send(store, &general, &alice, "m6", None).await.value;

    let after = |i: usize, limit: usize| store.messages_after(general.id, m[i].id, limit);
    let got = after(1, 10).await.unwrap();
    assert_eq!(
        message_bodies(&got),
        ["m2", "m3", "m4", "m5", "m6"],
        "after m1"
    );
    assert_eq!(got.last(), Some(&later));
    let got = after(1, 2).await.unwrap();
    assert_eq!(message_bodies(&got), ["m2", "m3"], "after m1, limit 2");
    let got = after(0, 0).await.unwrap();
    assert_eq!(message_bodies(&got), Vec::<&str>::new(), "limit 0");
    let got = store
        .messages_after(general.id, later.id, 10)
        .await
        .unwrap();
    assert_eq!(message_bodies(&got), Vec::<&str>::new(), "after the newest");

    // Any id works as a resume point, even one from another room.
    let got = store
        .messages_after(general.id, noise.id, 10)
        .await
        .unwrap();
    assert_eq!(message_bodies(&got), ["m6"], "after another room's message");
    let got = store.messages_after(random.id, m[0].id, 10).await.unwrap();
    assert_eq!(message_bodies(&got), ["noise"], "the other room only");
}

async fn edit_message_replaces_the_body_of_live_messages_only(store: Arc<dyn Store>) {
    let store = &*store;
    let (_, general, m) = room_with_messages(store, 3).await;

    let edited = store
        .edit_message(m[1].id, "m1, edited", &[])
        .await
        .unwrap();
    assert_eq!(edited.body, "m1, edited");
    let edited_at = edited.edited_at.expect("edited_at is set");
    assert!(edited_at >= m[1].created_at, "edited after creation");
    assert_eq!(edited.deleted_at, None);
    assert_eq!(edited.seq, 4, "an edit is the room's next change");
    let unchanged = Message {
        body: m[1].body.clone(),
        edited_at: None,
        seq: m[1].seq,
        ..edited.clone()
    };
    assert_eq!(unchanged, m[1], "only body, edited_at and seq change");
    assert_eq!(store.message(m[1].id).await.unwrap(), Some(edited.clone()));

    let again = store
        .edit_message(m[1].id, "m1, edited twice", &[])
        .await
        .unwrap();
    assert_eq!(again.body, "m1, edited twice");
    assert!(again.edited_at.unwrap() >= edited_at);

    // An edited message keeps its place in history.
    let p = page(store, &general, first(10, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["m0", "m1, edited twice", "m2"], false, false)
    );

    store.delete_message(m[2].id, None).await.unwrap();
    let err = store
        .edit_message(m[2].id, "zombie", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(_)),
        "editing a tombstone: {err:?}"
    );
    let tombstone = store.message(m[2].id).await.unwrap().unwrap();
    assert_eq!((tombstone.body.as_str(), tombstone.edited_at), ("", None));

    let err = store
        .edit_message(ObjectId::new().into(), "ghost", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(_)),
        "editing an unknown id: {err:?}"
    );
}

async fn delete_message_leaves_a_tombstone_once(store: Arc<dyn Store>) {
    let store = &*store;
    let (_, general, m) = room_with_messages(store, 3).await;
    store
        .edit_message(m[1].id, "edited first", &[])
        .await
        .unwrap();

    let deleted = store.delete_message(m[1].id, None).await.unwrap();
    assert!(deleted.changed);
    let tombstone = deleted.value;
    assert_eq!(tombstone.body, "", "the body is cleared");
    let deleted_at = tombstone.deleted_at.expect("deleted_at is set");
    assert!(deleted_at >= m[1].created_at);
    assert!(tombstone.is_deleted());
    assert_eq!(
        (
            tombstone.id,
            tombstone.room_id,
            tombstone.sender_id,
            tombstone.created_at
        ),
        (m[1].id, m[1].room_id, m[1].sender_id, m[1].created_at)
    );
    assert_eq!(
        store.message(m[1].id).await.unwrap(),
        Some(tombstone.clone())
    );

    let again = store.delete_message(m[1].id, None).await.unwrap();
    assert_eq!(
        again,
        Written {
            value: tombstone,
            changed: false
        },
        "second delete"
    );

    let err = store
        .delete_message(ObjectId::new().into(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(_)),
        "deleting an unknown id: {err:?}"
    );

    let p = page(store, &general, first(10, NONE)).await;
    assert_eq!(bodies(&p), (vec!["m0", "m2"], false, false));
}

async fn ids_increase_in_creation_order(store: Arc<dyn Store>) {
    let store = &*store;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(user(store, &format!("user{i}")).await);
    }
    let mut rooms = Vec::new();
    for (i, creator) in users.iter().enumerate() {
        rooms.push(room(store, &format!("room{i}"), creator).await);
    }
    let mut messages = Vec::new();
    for i in 0..40 {
        let (r, u) = (&rooms[i % rooms.len()], &users[i % 3]);
        messages.push(send(store, r, u, &format!("x{i}"), None).await.value);
    }

    let strictly_increasing = |ids: Vec<ObjectId>| ids.windows(2).all(|w| w[0] < w[1]);
    assert!(
        strictly_increasing(users.iter().map(|u| u.id.object_id()).collect()),
        "users"
    );
    assert!(
        strictly_increasing(rooms.iter().map(|r| r.id.object_id()).collect()),
        "rooms"
    );
    assert!(
        strictly_increasing(messages.iter().map(|m| m.id.object_id()).collect()),
        "messages"
    );
    let times: Vec<_> = messages.iter().map(|m| m.created_at).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "created_at never goes back"
    );
}

async fn rooms_never_see_each_others_messages(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let a = room(store, "a", &alice).await;
    let b = room(store, "b", &alice).await;
    let mut in_a = Vec::new();
    let mut in_b = Vec::new();
    for i in 0..5 {
        in_a.push(send(store, &a, &alice, &format!("a{i}"), None).await.value);
        in_b.push(send(store, &b, &alice, &format!("b{i}"), None).await.value);
    }

    let p = page(store, &a, first(10, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["a0", "a1", "a2", "a3", "a4"], false, false)
    );
    let p = page(store, &b, last(10, NONE)).await;
    assert_eq!(
        bodies(&p),
        (vec!["b0", "b1", "b2", "b3", "b4"], false, false)
    );
    // Pages that end between two of b's messages stop at a's boundaries.
    let p = page(store, &a, first(2, Some(in_a[1].id))).await;
    assert_eq!(bodies(&p), (vec!["a2", "a3"], true, true));
    let p = page(store, &a, last(2, Some(in_a[4].id))).await;
    assert_eq!(bodies(&p), (vec!["a2", "a3"], true, true));
    let p = page(store, &a, first(2, Some(in_a[2].id))).await;
    assert_eq!(
        bodies(&p),
        (vec!["a3", "a4"], true, false),
        "b4 is not a's next"
    );
    let p = page(store, &b, last(2, Some(in_b[2].id))).await;
    assert_eq!(
        bodies(&p),
        (vec!["b0", "b1"], false, true),
        "a0 is not b's previous"
    );

    let replay = store.messages_after(a.id, in_a[0].id, 10).await.unwrap();
    assert_eq!(message_bodies(&replay), ["a1", "a2", "a3", "a4"]);

    // Deleting in one room does not touch the other.
    store.delete_message(in_b[4].id, None).await.unwrap();
    let p = page(store, &a, last(1, NONE)).await;
    assert_eq!(bodies(&p), (vec!["a4"], true, false));

    let nowhere = page(
        store,
        &Room {
            id: ObjectId::new().into(),
            ..a.clone()
        },
        first(10, NONE),
    )
    .await;
    assert_eq!(bodies(&nowhere), (vec![], false, false), "an unknown room");
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

async fn concurrent_inserts_all_succeed_exactly_once(store: Arc<dyn Store>) {
    const N: usize = 200;
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let general = room(&*store, "general", &alice).await;

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            let sender = if i % 2 == 0 { alice.id } else { bob.id };
            // Half carry a client id, half do not: both paths must hold up under load.
            let client_id = (i % 4 < 2).then(|| format!("c-{i}"));
            tokio::spawn(async move {
                store
                    .insert_message(NewMessage {
                        room_id: general.id,
                        sender_id: sender,
                        body: format!("msg {i}"),
                        client_id,
                        mentions: Vec::new(),
                    })
                    .await
            })
        })
        .collect();
    let mut inserted = Vec::with_capacity(N);
    for (i, result) in futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .enumerate()
    {
        let written = result
            .expect("task panicked")
            .unwrap_or_else(|e| panic!("insert {i} failed: {e:?}"));
        assert!(written.changed, "insert {i} was new");
        assert_eq!(written.value.body, format!("msg {i}"));
        inserted.push(written.value);
    }
    let distinct: HashSet<_> = inserted.iter().map(|m| m.id).collect();
    assert_eq!(distinct.len(), N, "every insert got its own id");

    let history = page(&*store, &general, first(N + 10, NONE)).await;
    assert_eq!((history.has_previous, history.has_next), (false, false));
    assert_eq!(
        history.items.len(),
        N,
        "every message is stored exactly once"
    );
    let stored: HashSet<_> = history.items.iter().map(|m| m.id).collect();
    assert_eq!(stored, distinct);
    assert!(
        history.items.windows(2).all(|w| w[0].id < w[1].id),
        "in id order"
    );
    let mut expected = inserted;
    expected.sort_by_key(|m| m.id);
    assert_eq!(history.items, expected, "stored exactly as acknowledged");
}

async fn concurrent_retries_with_one_client_id_store_one_message(store: Arc<dyn Store>) {
    const N: usize = 50;
    let alice = user(&*store, "alice").await;
    let general = room(&*store, "general", &alice).await;

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_message(NewMessage {
                        room_id: general.id,
                        sender_id: alice.id,
                        body: format!("attempt {i}"),
                        client_id: Some("retry-me".to_owned()),
                        mentions: Vec::new(),
                    })
                    .await
            })
        })
        .collect();
    let results: Vec<Written<Message>> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task panicked").expect("insert"))
        .collect();

    let winners: Vec<_> = results.iter().filter(|w| w.changed).collect();
    assert_eq!(winners.len(), 1, "exactly one insert stored the message");
    let stored = &winners[0].value;
    assert!(
        results.iter().all(|w| &w.value == stored),
        "all answer the stored message"
    );
    let history = page(&*store, &general, first(N, NONE)).await;
    assert_eq!(history.items, vec![stored.clone()]);
}

async fn concurrent_create_user_with_one_name_has_one_winner(store: Arc<dyn Store>) {
    const N: usize = 50;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_user("racer", &format!("hash {i}")).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for result in futures_util::future::join_all(tasks).await {
        match result.expect("task panicked") {
            Ok(user) => winners.push(user),
            Err(Error::Conflict {
                field: "username", ..
            }) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        (winners.len(), conflicts),
        (1, N - 1),
        "(created, conflicts)"
    );
    let found = store
        .credentials("RACER")
        .await
        .unwrap()
        .expect("the winner");
    assert_eq!(found.user, winners[0]);
}

async fn concurrent_create_room_with_one_name_has_one_winner(store: Arc<dyn Store>) {
    const N: usize = 50;
    let mut creators = Vec::new();
    for i in 0..N {
        creators.push(user(&*store, &format!("creator{i}")).await);
    }
    let tasks: Vec<_> = creators
        .iter()
        .enumerate()
        .map(|(i, creator)| {
            let (store, creator) = (store.clone(), creator.id);
            // The same name in varying letter case.
            let name = if i % 2 == 0 { "Lobby" } else { "lobby" };
            tokio::spawn(async move { store.create_room(NewRoom::public(name, creator)).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for result in futures_util::future::join_all(tasks).await {
        match result.expect("task panicked") {
            Ok(room) => winners.push(room),
            Err(Error::Conflict { field: "name", .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        (winners.len(), conflicts),
        (1, N - 1),
        "(created, conflicts)"
    );
    let lobby = &winners[0];
    assert_eq!(
        store.member_count(lobby.id).await.unwrap(),
        1,
        "only the winner joined"
    );
    let all = room_page(&*store, first(10, NONE)).await;
    assert_eq!(all.items, vec![lobby.clone()]);
}

// ---------------------------------------------------------------------------------------------
// Events of committed writes
// ---------------------------------------------------------------------------------------------

async fn committed_writes_are_announced_once_in_commit_order(store: Arc<dyn Store>) {
    let mut events = store
        .take_events()
        .expect("the first take gets the channel");
    assert!(
        store.take_events().is_none(),
        "the channel is handed out once"
    );
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;

    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap(); // no change, no event
    let message = send(&*store, &lobby, &ada, "hi", Some("k")).await.value;
    send(&*store, &lobby, &ada, "hi again", Some("k")).await; // a retry, no event
    let edited = store.edit_message(message.id, "hello", &[]).await.unwrap();
    store.delete_message(message.id, None).await.unwrap();
    store.delete_message(message.id, None).await.unwrap(); // already a tombstone, no event
    store
        .remove_member(lobby.id, bob.id, Departure::Left)
        .await
        .unwrap();
    store
        .remove_member(lobby.id, bob.id, Departure::Left)
        .await
        .unwrap(); // no change, no event
    // A last event, after which nothing else may come.
    let sentinel = room(&*store, "sentinel", &ada).await;
    store
        .add_member(sentinel.id, bob.id, RoomRole::Member)
        .await
        .unwrap();

    let mut announced = Vec::new();
    loop {
        match next_event(&mut events).await {
            RoomEvent::MemberJoined { room_id, .. } if room_id == sentinel.id => break,
            event => announced.push(event),
        }
    }
    assert_eq!(
        announced,
        vec![
            RoomEvent::MemberJoined {
                room_id: lobby.id,
                user: bob.clone()
            },
            RoomEvent::MessageAdded(message.clone()),
            RoomEvent::MessageEdited(edited),
            RoomEvent::MessageDeleted {
                room_id: lobby.id,
                message_id: message.id,
                seq: 3,
                deleted_by: None,
            },
            RoomEvent::MemberLeft {
                room_id: lobby.id,
                user: bob
            },
        ]
    );
}

/// The next event a store announces. A write may return just before its event is queued; the
/// timeout only turns a missing event into a failure instead of a hang.
async fn next_event(events: &mut tokio::sync::mpsc::Receiver<RoomEvent>) -> RoomEvent {
    tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
        .await
        .expect("an event in time")
        .expect("the channel is open")
}

async fn concurrent_inserts_are_announced_in_id_order(store: Arc<dyn Store>) {
    let mut events = store.take_events().expect("the channel");
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (store, lobby, ada) = (store.clone(), lobby.clone(), ada.clone());
            tokio::spawn(async move { send(&*store, &lobby, &ada, &format!("c{i}"), None).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("insert task");
    }
    let mut ids = Vec::new();
    while ids.len() < 100 {
        match next_event(&mut events).await {
            RoomEvent::MessageAdded(message) => ids.push(message.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "announced out of id order"
    );
}

async fn room_head_names_the_newest_message_and_the_change_number(store: Arc<dyn Store>) {
    let (alice, general, sent) = room_with_messages(&*store, 3).await;
    let quiet = room(&*store, "quiet", &alice).await;
    let head = |last_message, seq| RoomHead { last_message, seq };
    assert_eq!(store.room_head(quiet.id).await.unwrap(), head(None, 0));
    assert_eq!(
        store.room_head(general.id).await.unwrap(),
        head(Some(sent[2].id), 3)
    );
    // A tombstone still counts as the newest message; the deletion is a change.
    store.delete_message(sent[2].id, None).await.unwrap();
    assert_eq!(
        store.room_head(general.id).await.unwrap(),
        head(Some(sent[2].id), 4)
    );
    let missing = RoomId::from_bytes([7; 12]);
    assert!(matches!(
        store.room_head(missing).await,
        Err(Error::NotFound(_))
    ));
}

async fn changes_after_lists_each_message_once_at_its_latest_change(store: Arc<dyn Store>) {
    let (alice, general, sent) = room_with_messages(&*store, 3).await;
    assert_eq!(
        sent.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "each new message takes the room's next number"
    );
    let edited = store.edit_message(sent[0].id, "edited", &[]).await.unwrap();
    assert_eq!(edited.seq, 4);
    let deleted = store.delete_message(sent[1].id, None).await.unwrap().value;
    assert_eq!(deleted.seq, 5);
    // Nothing changed, nothing numbered: a retried client id, a second delete, a failed edit.
    send(&*store, &general, &alice, "k", Some("k1")).await;
    send(&*store, &general, &alice, "k again", Some("k1")).await;
    store.delete_message(sent[1].id, None).await.unwrap();
    assert!(store.edit_message(sent[1].id, "zombie", &[]).await.is_err());
    let retried = store.changes_after(general.id, 5, 10).await.unwrap();
    assert_eq!(retried.iter().map(|m| m.seq).collect::<Vec<_>>(), [6]);

    let all = store.changes_after(general.id, 0, 10).await.unwrap();
    let listed: Vec<(MessageId, u64, &str)> =
        all.iter().map(|m| (m.id, m.seq, m.body.as_str())).collect();
    assert_eq!(
        listed,
        [
            (sent[2].id, 3, "m2"),
            (sent[0].id, 4, "edited"),
            (sent[1].id, 5, ""),
            (retried[0].id, 6, "k"),
        ],
        "in change order, each message once, as it is now, tombstones included"
    );
    assert!(all[2].is_deleted() && all[1].edited_at.is_some());
    let page = store.changes_after(general.id, 3, 1).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [4]);
    assert!(
        store
            .changes_after(general.id, 6, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .changes_after(general.id, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Numbers are per room.
    let other = room(&*store, "other", &alice).await;
    assert_eq!(send(&*store, &other, &alice, "o", None).await.value.seq, 1);
    assert_eq!(store.changes_after(other.id, 0, 10).await.unwrap().len(), 1);
}

async fn concurrent_changes_take_consecutive_numbers_in_id_order(store: Arc<dyn Store>) {
    let (alice, general, sent) = room_with_messages(&*store, 20).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (store, general, alice) = (store.clone(), general.clone(), alice.clone());
            let target = sent[i % 20].id;
            tokio::spawn(async move {
                if i % 2 == 0 {
                    send(&*store, &general, &alice, &format!("c{i}"), None).await;
                } else {
                    store
                        .edit_message(target, &format!("e{i}"), &[])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("change task");
    }
    let head = store.room_head(general.id).await.unwrap();
    assert_eq!(head.seq, 60, "20 sends, then 20 more and 20 edits");
    let changes = store.changes_after(general.id, 20, 100).await.unwrap();
    let mut numbers: Vec<u64> = changes.iter().map(|m| m.seq).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), changes.len(), "a number taken twice");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    // Messages are numbered at creation in id order: new ones are never edited here.
    let created: Vec<&Message> = changes.iter().filter(|m| m.edited_at.is_none()).collect();
    assert_eq!(created.len(), 20);
    assert!(
        created.windows(2).all(|w| w[0].id < w[1].id),
        "ids do not follow the change order"
    );
    assert_eq!(Some(created[19].id), head.last_message);
}

// ---------------------------------------------------------------------------------------------
// MongoDB only: several instances on one database
// ---------------------------------------------------------------------------------------------

/// A store on the test database `db`, standing for one Confab instance.
async fn mongo_instance(uri: &str, db: &str) -> Arc<dyn Store> {
    confab::store::mongo::MongoStore::connect_database(uri, db)
        .await
        .expect("connect to the MongoDB test server")
}

/// A fresh database with the indexes an older Confab left, and a raw handle on it to write
/// documents as that Confab did: the server's URI, the database's name, and the handle.
async fn mongo_as_left_by_an_older_confab() -> Option<(String, String, mongodb::Database)> {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return None;
    };
    let db = support::mongo::fresh_database();
    drop(mongo_instance(&uri, &db).await);
    let raw = mongodb::Client::with_uri_str(&uri)
        .await
        .expect("a raw client")
        .database(&db);
    Some((uri, db, raw))
}

/// Users `(n, name)` as an older Confab stored them (keys of version 2), ids ending in `n`.
async fn old_users(raw: &mongodb::Database, users: &[(u8, &str)]) {
    let collection = raw.collection::<bson::Document>("users");
    for &(n, name) in users {
        collection
            .insert_one(bson::doc! {
                "_id": ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]),
                "username": name, "username_key": name, "key_version": 2_i64,
                "password_hash": format!("h{n}"), "created_at": bson::DateTime::now(),
            })
            .await
            .expect("an old user");
    }
}

/// The schema version lives in `meta`: a database without it (an older Confab's) gets it at
/// startup, and one a newer Confab left is refused before anything is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_records_the_schema_version_and_refuses_a_newer_one() {
    let Some((uri, db, raw)) = mongo_as_left_by_an_older_confab().await else {
        return;
    };
    let meta = raw.collection::<bson::Document>("meta");
    let stored = async || {
        meta.find_one(bson::doc! {"_id": "schema"})
            .await
            .unwrap()
            .and_then(|d| d.get_i64("version").ok())
    };
    assert_eq!(stored().await, Some(confab::store::SCHEMA_VERSION));
    meta.delete_one(bson::doc! {"_id": "schema"}).await.unwrap();
    let store = mongo_instance(&uri, &db).await;
    assert_eq!(store.schema_version(), confab::store::SCHEMA_VERSION);
    assert_eq!(stored().await, Some(confab::store::SCHEMA_VERSION));

    meta.update_one(
        bson::doc! {"_id": "schema"},
        bson::doc! {"$set": {"version": 99_i64}},
    )
    .await
    .unwrap();
    let refused = confab::store::mongo::MongoStore::connect_database(&uri, &db)
        .await
        .err()
        .expect("a newer schema is refused");
    let text = format!("{refused:#}");
    assert!(text.contains("schema version 99, newer"), "{text}");
    assert_eq!(stored().await, Some(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_instances_sharing_a_database_number_changes_in_commit_order() {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = support::mongo::fresh_database();
    let instances = [
        mongo_instance(&uri, &db).await,
        mongo_instance(&uri, &db).await,
    ];
    let ada = user(&*instances[0], "ada").await;
    let lobby = room(&*instances[0], "lobby", &ada).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (store, lobby, ada) = (instances[i % 2].clone(), lobby.clone(), ada.clone());
            tokio::spawn(async move { send(&*store, &lobby, &ada, &format!("c{i}"), None).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("insert task");
    }
    let changes = instances[1].changes_after(lobby.id, 0, 100).await.unwrap();
    assert_eq!(
        changes.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<u64>>(),
        "each change takes the next number, whichever instance wrote it"
    );
    assert!(
        changes.windows(2).all(|w| w[0].id < w[1].id),
        "ids minted by two instances do not follow commit order"
    );
    for instance in &instances {
        assert_eq!(
            instance.room_head(lobby.id).await.unwrap(),
            RoomHead {
                last_message: Some(changes[59].id),
                seq: 60
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_a_write_lease_left_by_a_dead_instance_is_taken_over() {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = support::mongo::fresh_database();
    let store = mongo_instance(&uri, &db).await;
    let (alice, general, sent) = room_with_messages(&*store, 2).await;
    // An instance died after writing change 3 and before releasing the room's lease, which has
    // since expired. Its message id is a second ahead of this instance's.
    let raw = mongodb::Client::with_uri_str(&uri)
        .await
        .expect("a raw client")
        .database(&db);
    let mut ghost_id = sent[1].id.bytes();
    ghost_id[3] = ghost_id[3].wrapping_add(1);
    if ghost_id[3] == 0 {
        ghost_id[2] = ghost_id[2].wrapping_add(1);
    }
    let ghost_id = ObjectId::from_bytes(ghost_id);
    raw.collection::<bson::Document>("messages")
        .insert_one(bson::doc! {
            "_id": ghost_id, "room_id": general.id, "sender_id": alice.id, "body": "ghost",
            "created_at": bson::DateTime::now(), "seq": 3_i64,
        })
        .await
        .expect("insert the dead instance's message");
    let expired = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1);
    raw.collection::<bson::Document>("rooms")
        .update_one(
            bson::doc! {"_id": general.id},
            bson::doc! {"$set": {"lease": {"token": ObjectId::new(), "until": expired}}},
        )
        .await
        .expect("leave an expired lease");

    let next = send(&*store, &general, &alice, "after", None).await.value;
    assert_eq!(
        next.seq, 4,
        "the dead instance's change number was taken again"
    );
    assert!(
        next.id.object_id() > ghost_id,
        "an id below the dead instance's newest"
    );
    assert_eq!(
        store.room_head(general.id).await.unwrap(),
        RoomHead {
            last_message: Some(next.id),
            seq: 4
        }
    );
}

/// Documents written by an older Confab carry lower-case keys and no `key_version`; the next
/// startup recomputes them, the older of two look-alikes keeping the key, and changes nothing
/// when run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_keys_from_an_older_confab_are_recomputed_at_startup() {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = support::mongo::fresh_database();
    // The indexes exist, as an older Confab left them.
    drop(mongo_instance(&uri, &db).await);
    let raw = mongodb::Client::with_uri_str(&uri)
        .await
        .expect("a raw client")
        .database(&db);
    let id = |n: u8| ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
    let now = bson::DateTime::now();
    let users = raw.collection::<bson::Document>("users");
    for (n, name) in [(1, "ilse"), (2, "llse")] {
        users
            .insert_one(bson::doc! {
                "_id": id(n), "username": name, "username_key": name,
                "password_hash": format!("h{n}"), "created_at": now,
            })
            .await
            .expect("an old user");
    }
    let rooms = raw.collection::<bson::Document>("rooms");
    // The older room's new key is the newer room's old one.
    for (n, name, key) in [
        (4, "L0bby", "l0bby"),
        (5, "lobby", "lobby"),
        (6, "General", "general"),
    ] {
        rooms
            .insert_one(bson::doc! {
                "_id": id(n), "name": name, "name_key": key, "created_by": id(1),
                "created_at": now, "seq": 0_i64,
            })
            .await
            .expect("an old room");
    }

    let store = mongo_instance(&uri, &db).await;
    for name in ["LOBBY", "I0bby", "general"] {
        let err = store
            .create_room(NewRoom::public(name, id(1).into()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Conflict { field: "name", .. }),
            "{name:?}: {err:?}"
        );
    }
    let err = store.create_user("ILSE", "h").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                field: "username",
                ..
            }
        ),
        "{err:?}"
    );
    for (asked, hash) in [("ILSE", "h1"), ("llse", "h2")] {
        let found = store.credentials(asked).await.unwrap();
        assert_eq!(
            found.map(|c| c.password_hash).as_deref(),
            Some(hash),
            "{asked:?}"
        );
    }
    let keys = || async {
        let mut keys = Vec::new();
        for (collection, field) in [(&users, "username_key"), (&rooms, "name_key")] {
            let mut cursor = collection
                .find(bson::doc! {})
                .sort(bson::doc! {"_id": 1})
                .await
                .expect("find");
            while cursor.advance().await.expect("advance") {
                let doc = cursor.deserialize_current().expect("a document");
                keys.push((
                    doc.get_str(field).expect("a key").to_owned(),
                    doc.get_i64("key_version").expect("a key version"),
                ));
            }
        }
        keys
    };
    let upgraded = keys().await;
    let displaced = |key: &str, n: u8| format!("{key}\u{0}{}", id(n).to_hex());
    assert_eq!(
        upgraded,
        [
            ("llse".to_owned(), 2),
            (displaced("llse", 2), 2),
            ("lobby".to_owned(), 2),
            (displaced("lobby", 5), 2),
            ("general".to_owned(), 2),
        ]
    );
    drop(store);
    drop(mongo_instance(&uri, &db).await);
    assert_eq!(keys().await, upgraded, "a second startup changes nothing");
}

/// Rooms and memberships written before rooms for teams have no visibility and no roles; the
/// next startup makes each room's creator its owner (or, when the creator left, its
/// longest-standing member), leaves direct rooms and their pair keys alone, and changes
/// nothing when run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_roles_from_an_older_confab_are_set_at_startup() {
    let Some((uri, db, raw)) = mongo_as_left_by_an_older_confab().await else {
        return;
    };
    let id = |n: u8| ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
    let now = bson::DateTime::now();
    old_users(&raw, &[(1, "ada"), (2, "bob"), (3, "cid")]).await;
    let rooms = raw.collection::<bson::Document>("rooms");
    // "lobby" (4) keeps its creator (1); "general" (7) lost its creator, so its
    // longest-standing member (3, before 2) owns it; so does "den"'s (8, 2 before 3), which
    // has roles but no owner.
    for (n, name) in [(4, "lobby"), (7, "general"), (8, "den")] {
        rooms
            .insert_one(bson::doc! {
                "_id": id(n), "name": name, "name_key": name, "key_version": 2_i64,
                "created_by": id(1), "created_at": now, "seq": 0_i64,
            })
            .await
            .expect("an old room");
    }
    // A direct room (9) whose key an older key version made: it keeps its pair's key, and
    // nobody owns it.
    let pair = confab::store::direct_pair(id(1).into(), id(2).into());
    let direct_key = format!("\u{2}direct:{}:{}", pair[0].to_hex(), pair[1].to_hex());
    rooms
        .insert_one(bson::doc! {
            "_id": id(9), "name": "", "name_key": &direct_key, "key_version": 1_i64,
            "created_by": id(1), "created_at": now, "seq": 0_i64, "visibility": "private",
            "direct": [pair[0], pair[1]],
        })
        .await
        .expect("a direct room");
    let memberships = raw.collection::<bson::Document>("memberships");
    for (n, room, user, role) in [
        (10, 4, 2, None),
        (11, 4, 1, None),
        (12, 7, 3, None),
        (13, 7, 2, None),
        (14, 8, 2, Some("member")),
        (15, 8, 3, Some("admin")),
        (16, 9, 1, Some("member")),
        (17, 9, 2, Some("member")),
    ] {
        let mut membership = bson::doc! {
            "_id": id(n), "room_id": id(room), "user_id": id(user), "joined_at": now,
        };
        if let Some(role) = role {
            membership.insert("role", role);
        }
        memberships
            .insert_one(membership)
            .await
            .expect("an old membership");
    }

    let store = mongo_instance(&uri, &db).await;
    let (owner, admin, member) = (
        Some(RoomRole::Owner),
        Some(RoomRole::Admin),
        Some(RoomRole::Member),
    );
    let upgraded = old_roles(&*store).await;
    assert_eq!(
        upgraded,
        [owner, member, owner, member, owner, admin, member, member]
    );
    let directory = store.rooms(first(10, NONE)).await.unwrap();
    assert_eq!(
        names(&directory).0,
        ["lobby", "general", "den"],
        "old rooms are public; the direct room is not listed"
    );
    let dm = store
        .room(id(9).into())
        .await
        .unwrap()
        .expect("the direct room");
    assert_eq!(dm.direct, Some(pair));
    let key = rooms
        .find_one(bson::doc! {"_id": id(9)})
        .await
        .unwrap()
        .expect("the direct room");
    assert_eq!(key.get_str("name_key"), Ok(direct_key.as_str()));
    assert_eq!(
        store
            .direct_room(id(2).into(), id(1).into())
            .await
            .unwrap()
            .value
            .id,
        id(9).into()
    );

    drop(store);
    let again = old_roles(&*mongo_instance(&uri, &db).await).await;
    assert_eq!(again, upgraded, "a second startup changes nothing");
}

/// The roles of the memberships `mongo_roles_from_an_older_confab_are_set_at_startup` stored.
async fn old_roles(store: &dyn Store) -> Vec<Option<RoomRole>> {
    let id = |n: u8| ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
    let mut roles = Vec::new();
    for (room, user) in [
        (4, 1),
        (4, 2),
        (7, 3),
        (7, 2),
        (8, 2),
        (8, 3),
        (9, 1),
        (9, 2),
    ] {
        let membership = store
            .membership(id(room).into(), id(user).into())
            .await
            .unwrap();
        roles.push(membership.map(|m| m.role));
    }
    roles
}

/// Two instances without transactions: a join on one and a ban on the other end with the
/// user out, whichever writes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_a_join_and_a_ban_on_two_instances_end_with_the_user_out() {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = support::mongo::fresh_database();
    let instances = [
        mongo_instance(&uri, &db).await,
        mongo_instance(&uri, &db).await,
    ];
    let ada = user(&*instances[0], "ada").await;
    let lobby = room(&*instances[0], "lobby", &ada).await;
    for i in 0..20 {
        let someone = user(&*instances[0], &format!("user{i}")).await;
        let join = {
            let store = instances[i % 2].clone();
            tokio::spawn(async move {
                store
                    .add_member(lobby.id, someone.id, RoomRole::Member)
                    .await
            })
        };
        let ban = {
            let store = instances[(i + 1) % 2].clone();
            tokio::spawn(async move { store.ban(lobby.id, someone.id, ada.id, None).await })
        };
        let _ = join.await.unwrap();
        ban.await.unwrap().unwrap();
        for instance in &instances {
            assert!(
                !instance.is_member(lobby.id, someone.id).await.unwrap(),
                "round {i}: a banned user stayed a member"
            );
        }
    }
}

/// Two instances asked for one pair's direct room at once store one room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_direct_rooms_asked_on_two_instances_are_one() {
    let Some(uri) = support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = support::mongo::fresh_database();
    let instances = [
        mongo_instance(&uri, &db).await,
        mongo_instance(&uri, &db).await,
    ];
    let ada = user(&*instances[0], "ada").await;
    let bob = user(&*instances[0], "bob").await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let store = instances[i % 2].clone();
            let (a, b) = if i % 4 < 2 {
                (ada.id, bob.id)
            } else {
                (bob.id, ada.id)
            };
            tokio::spawn(async move { store.direct_room(a, b).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for call in calls {
        let written = call.await.unwrap().expect("every call gets the room");
        ids.insert(written.value.id);
        created += usize::from(written.changed);
    }
    assert_eq!((ids.len(), created), (1, 1), "one room, created once");
    let dm = ids.into_iter().next().expect("the room");
    assert_eq!(instances[1].member_count(dm).await.unwrap(), 2);
    assert_eq!(
        instances[1].room_count_of(ada.id).await.unwrap(),
        1,
        "a room that gave way left no membership behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

fn hash(n: u8) -> TokenHash {
    [n; 32]
}

async fn session(store: &dyn Store, user: &User, token: u8, agent: &str) -> Session {
    store
        .create_session(NewSession {
            user_id: user.id,
            refresh_hash: hash(token),
            user_agent: Some(agent.to_owned()),
            expires_at: Utc::now() + Duration::days(30),
        })
        .await
        .expect("create a session")
}

async fn rotate(store: &dyn Store, id: SessionId, presented: u8, next: u8) -> Rotation {
    store
        .rotate_session(
            id,
            hash(presented),
            hash(next),
            Utc::now() + Duration::days(30),
        )
        .await
        .expect("rotate")
}

async fn sessions_are_created_and_read_back(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let made = session(&*store, &ada, 1, "curl/8").await;
    assert_eq!(made.user_id, ada.id);
    assert_eq!(made.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(made.last_used_at, made.created_at);
    assert!(made.is_active(Utc::now()));
    assert_eq!(store.session(made.id).await.unwrap(), Some(made.clone()));
    assert_eq!(
        store
            .session(SessionId::from(ObjectId::new()))
            .await
            .unwrap(),
        None
    );
}

async fn rotating_with_the_current_token_renews_the_session(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let made = session(&*store, &ada, 1, "a").await;
    let later = Utc::now() + Duration::days(40);
    let Rotation::Rotated(renewed) = store
        .rotate_session(made.id, hash(1), hash(2), later)
        .await
        .unwrap()
    else {
        panic!("the current token must rotate");
    };
    assert_eq!(renewed.id, made.id);
    assert_eq!(
        renewed.expires_at.timestamp_millis(),
        later.timestamp_millis()
    );
    assert!(renewed.last_used_at >= made.last_used_at);
    assert_eq!(store.session(made.id).await.unwrap(), Some(renewed));
    // The new token rotates in turn.
    assert!(matches!(
        rotate(&*store, made.id, 2, 3).await,
        Rotation::Rotated(_)
    ));
}

async fn a_spent_token_presented_again_revokes_the_session(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let made = session(&*store, &ada, 1, "a").await;
    for (presented, next) in [(1, 2), (2, 3), (3, 4)] {
        assert!(matches!(
            rotate(&*store, made.id, presented, next).await,
            Rotation::Rotated(_)
        ));
    }
    // Spent three rotations ago, and still known for what it is.
    let Rotation::Reused(revoked) = rotate(&*store, made.id, 1, 9).await else {
        panic!("a spent token must be detected");
    };
    assert!(revoked.revoked_at.is_some());
    assert!(!revoked.is_active(Utc::now()));
    // The current token of a revoked session is refused too.
    assert_eq!(rotate(&*store, made.id, 4, 5).await, Rotation::Refused);
}

async fn an_unknown_token_or_an_ended_session_is_refused_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let ada = user(&*store, "ada").await;
    let made = session(&*store, &ada, 1, "a").await;
    assert_eq!(rotate(&*store, made.id, 77, 2).await, Rotation::Refused);
    assert_eq!(store.session(made.id).await.unwrap(), Some(made.clone()));
    assert!(matches!(
        rotate(&*store, made.id, 1, 2).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        rotate(&*store, SessionId::from(ObjectId::new()), 1, 2).await,
        Rotation::Refused
    );

    let ending = store
        .create_session(NewSession {
            user_id: ada.id,
            refresh_hash: hash(5),
            user_agent: None,
            expires_at: Utc::now() + Duration::milliseconds(50),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(rotate(&*store, ending.id, 5, 6).await, Rotation::Refused);
}

async fn revoking_sessions_says_what_changed(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let one = session(&*store, &ada, 1, "a").await;
    let two = session(&*store, &ada, 2, "b").await;
    let three = session(&*store, &ada, 3, "c").await;
    let bobs = session(&*store, &bob, 4, "d").await;

    let first = store.revoke_session(one.id).await.unwrap();
    assert!(first.changed);
    assert!(first.value.revoked_at.is_some());
    assert!(!store.revoke_session(one.id).await.unwrap().changed);
    assert!(matches!(
        store.revoke_session(SessionId::from(ObjectId::new())).await,
        Err(Error::NotFound(_))
    ));

    let revoked = store
        .revoke_sessions_of(ada.id, Some(three.id))
        .await
        .unwrap();
    assert_eq!(revoked, vec![two.id]);
    let revoked = store.revoke_sessions_of(ada.id, None).await.unwrap();
    assert_eq!(revoked, vec![three.id]);
    assert!(
        store
            .revoke_sessions_of(ada.id, None)
            .await
            .unwrap()
            .is_empty()
    );
    let untouched = store
        .session(bobs.id)
        .await
        .unwrap()
        .expect("bob's session");
    assert!(untouched.revoked_at.is_none());
}

async fn sessions_of_lists_active_sessions_most_recently_used_first(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let old = session(&*store, &ada, 1, "old").await;
    let newer = session(&*store, &ada, 2, "newer").await;
    let gone = session(&*store, &ada, 3, "gone").await;
    session(&*store, &bob, 4, "bob").await;
    store.revoke_session(gone.id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Using the oldest makes it the most recently used.
    assert!(matches!(
        rotate(&*store, old.id, 1, 5).await,
        Rotation::Rotated(_)
    ));

    let listed: Vec<SessionId> = store
        .sessions_of(ada.id, Utc::now(), 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![old.id, newer.id]);
    let one = store.sessions_of(ada.id, Utc::now(), 1).await.unwrap();
    assert_eq!(one.len(), 1);
    let later = store
        .sessions_of(ada.id, Utc::now() + Duration::days(31), 10)
        .await
        .unwrap();
    assert!(later.is_empty(), "sessions past their end are not listed");
}

async fn purge_sessions_deletes_only_ended_sessions(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let live = session(&*store, &ada, 1, "live").await;
    let revoked = session(&*store, &ada, 2, "revoked").await;
    store.revoke_session(revoked.id).await.unwrap();
    let purged = store
        .purge_sessions(Utc::now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(store.session(revoked.id).await.unwrap().is_none());
    assert!(store.session(live.id).await.unwrap().is_some());
    let purged = store
        .purge_sessions(Utc::now() + Duration::days(31))
        .await
        .unwrap();
    assert_eq!(purged, 1, "a session past its end goes too");
}

async fn concurrent_rotations_with_one_token_rotate_once(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let made = session(&*store, &ada, 1, "a").await;
    let rotations = futures_util::future::join_all((0..8u8).map(|i| {
        let store = store.clone();
        async move { rotate(&*store, made.id, 1, 100 + i).await }
    }))
    .await;
    let rotated = rotations
        .iter()
        .filter(|r| matches!(r, Rotation::Rotated(_)))
        .count();
    assert_eq!(rotated, 1, "{rotations:?}");
}

// ---------------------------------------------------------------------------------------------
// Accounts: deletion, standing, invitations; messages by sender; room deletion
// ---------------------------------------------------------------------------------------------

async fn a_deleted_user_keeps_its_id_and_its_name_until_released(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &bob).await;
    store
        .add_member(lobby.id, ada.id, RoomRole::Member)
        .await
        .unwrap();
    session(&*store, &ada, 1, "a").await;

    store
        .delete_user(ada.id, Utc::now() + Duration::days(30))
        .await
        .unwrap();
    let shown = store
        .user(ada.id)
        .await
        .unwrap()
        .expect("the id still resolves");
    assert_eq!(shown.username, DELETED_USER);
    assert!(store.credentials("ada").await.unwrap().is_none());
    assert!(store.credentials_by_id(ada.id).await.unwrap().is_none());
    assert!(
        store
            .standing(ada.id)
            .await
            .unwrap()
            .expect("standing")
            .deleted
    );
    assert!(!store.is_member(lobby.id, ada.id).await.unwrap());
    assert!(
        store
            .sessions_of(ada.id, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.create_user("Ada", "h").await,
        Err(Error::Conflict {
            field: "username",
            ..
        })
    ));

    assert_eq!(store.release_names(Utc::now()).await.unwrap(), 0);
    assert_eq!(
        store
            .release_names(Utc::now() + Duration::days(31))
            .await
            .unwrap(),
        1
    );
    let again = store
        .create_user("ada", "h")
        .await
        .expect("the name is free");
    assert_ne!(again.id, ada.id);
    assert!(matches!(
        store
            .delete_user(UserId::from(ObjectId::new()), Utc::now())
            .await,
        Err(Error::NotFound(_))
    ));
}

async fn the_first_user_is_an_admin_and_standing_follows_grants_and_suspensions(
    store: Arc<dyn Store>,
) {
    assert!(!store.has_users().await.unwrap());
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    assert!(store.has_users().await.unwrap());
    assert!(store.standing(ada.id).await.unwrap().expect("ada").admin);
    let standing = store.standing(bob.id).await.unwrap().expect("bob");
    assert!(!standing.admin && standing.suspended.is_none() && !standing.deleted);

    // The first account's rights are stored, so they can be taken back like any other's.
    store.set_admin(ada.id, false).await.unwrap();
    assert!(!store.standing(ada.id).await.unwrap().expect("ada").admin);
    store.set_admin(bob.id, true).await.unwrap();
    assert!(store.standing(bob.id).await.unwrap().expect("bob").admin);
    store.set_admin(bob.id, false).await.unwrap();
    assert!(!store.standing(bob.id).await.unwrap().expect("bob").admin);

    store.set_suspended(bob.id, Some("spam")).await.unwrap();
    let standing = store.standing(bob.id).await.unwrap().expect("bob");
    assert_eq!(standing.suspended.as_deref(), Some("spam"));
    store.set_suspended(bob.id, None).await.unwrap();
    assert!(
        store
            .standing(bob.id)
            .await
            .unwrap()
            .expect("bob")
            .suspended
            .is_none()
    );

    let nobody = UserId::from(ObjectId::new());
    assert_eq!(store.standing(nobody).await.unwrap(), None);
    assert!(matches!(
        store.set_admin(nobody, true).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.set_suspended(nobody, Some("x")).await,
        Err(Error::NotFound(_))
    ));
    store.set_password(ada.id, "new-hash").await.unwrap();
    let credentials = store.credentials_by_id(ada.id).await.unwrap().expect("ada");
    assert_eq!(credentials.password_hash, "new-hash");
}

async fn an_invitation_is_taken_once_and_can_be_given_back(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    store.create_invite(hash(1), Some(ada.id)).await.unwrap();
    store.create_invite(hash(2), None).await.unwrap();
    assert!(store.take_invite(hash(1)).await.unwrap());
    assert!(!store.take_invite(hash(1)).await.unwrap());
    assert!(!store.take_invite(hash(3)).await.unwrap());
    store.return_invite(hash(1)).await.unwrap();
    assert!(store.take_invite(hash(1)).await.unwrap());
    assert!(store.take_invite(hash(2)).await.unwrap());
}

async fn messages_by_lists_a_senders_live_messages_in_id_order(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let den = room(&*store, "den", &ada).await;
    let one = send(&*store, &lobby, &ada, "one", None).await.value;
    send(&*store, &lobby, &bob, "bob's", None).await;
    let two = send(&*store, &den, &ada, "two", None).await.value;
    let three = send(&*store, &lobby, &ada, "three", None).await.value;
    store.delete_message(two.id, None).await.unwrap();

    let all = store.messages_by(ada.id, None, 10).await.unwrap();
    assert_eq!(message_bodies(&all), ["one", "three"]);
    let after = store.messages_by(ada.id, Some(one.id), 10).await.unwrap();
    assert_eq!(message_bodies(&after), ["three"]);
    let first = store.messages_by(ada.id, None, 1).await.unwrap();
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), [one.id]);
    assert!(
        store
            .messages_by(ada.id, Some(three.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn delete_room_removes_its_messages_and_frees_its_name(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let den = room(&*store, "den", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let gone = send(&*store, &lobby, &ada, "gone", None).await.value;
    let kept = send(&*store, &den, &ada, "kept", None).await.value;

    let mut left = store.delete_room(lobby.id).await.unwrap();
    left.sort();
    let mut members = vec![ada.id, bob.id];
    members.sort();
    assert_eq!(left, members, "the members it found are returned");
    assert!(matches!(
        store.delete_room(lobby.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(store.room(lobby.id).await.unwrap().is_none());
    assert!(store.message(gone.id).await.unwrap().is_none());
    assert!(!store.is_member(lobby.id, ada.id).await.unwrap());
    assert_eq!(store.room_count_of(bob.id).await.unwrap(), 0);
    assert_eq!(
        store.message(kept.id).await.unwrap().map(|m| m.id),
        Some(kept.id)
    );
    let again = store
        .create_room(NewRoom::public("Lobby", ada.id))
        .await
        .expect("the name is free");
    assert_ne!(again.id, lobby.id);
}
