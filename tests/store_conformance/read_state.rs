//! Read state: markers, unread and mention counts, the same on every store.

use std::sync::Arc;

use confab::{
    error::Error,
    model::{ObjectId, ReadState, RoomId, RoomRole, User, UserId},
    store::{NewMessage, Store},
};

use super::{mongo_as_left_by_an_older_confab, mongo_instance, old_users, room, send, user};

async fn mention(
    store: &dyn Store,
    room: &confab::model::Room,
    sender: &User,
    body: &str,
    who: &[&User],
) -> confab::model::Message {
    store
        .insert_message(NewMessage {
            room_id: room.id,
            sender_id: sender.id,
            body: body.into(),
            client_id: None,
            mentions: who.iter().map(|u| u.id).collect(),
        })
        .await
        .unwrap()
        .value
}

async fn state(store: &dyn Store, room: &confab::model::Room, user: &User) -> ReadState {
    store.read_state(room.id, user.id).await.unwrap().unwrap()
}

pub async fn a_new_member_has_read_everything_before_joining(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    assert_eq!(state(&*store, &lobby, &ada).await, ReadState::default());
    send(&*store, &lobby, &ada, "before", None).await;
    let last = send(&*store, &lobby, &ada, "also before", None).await.value;
    assert!(store.read_state(lobby.id, bob.id).await.unwrap().is_none());
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert_eq!(
        state(&*store, &lobby, &bob).await,
        ReadState {
            last_read: Some(last.id),
            unread: 0,
            mentions: 0
        }
    );
    send(&*store, &lobby, &ada, "after", None).await;
    assert_eq!(state(&*store, &lobby, &bob).await.unread, 1);
}

pub async fn unread_counts_others_live_messages_after_the_marker(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let first = send(&*store, &lobby, &ada, "one", None).await.value;
    send(&*store, &lobby, &bob, "mine", None).await;
    let doomed = send(&*store, &lobby, &ada, "two", None).await.value;
    let last = send(&*store, &lobby, &ada, "three", None).await.value;
    assert_eq!(
        state(&*store, &lobby, &bob).await.unread,
        3,
        "not bob's own"
    );
    store.delete_message(doomed.id, None).await.unwrap();
    assert_eq!(
        state(&*store, &lobby, &bob).await.unread,
        2,
        "not deleted ones"
    );

    let moved = store.mark_read(lobby.id, bob.id, first.id).await.unwrap();
    assert!(moved.changed);
    assert_eq!(
        moved.value,
        ReadState {
            last_read: Some(first.id),
            unread: 1,
            mentions: 0
        }
    );
    // Forward only: an older message changes nothing.
    store.mark_read(lobby.id, bob.id, last.id).await.unwrap();
    let back = store.mark_read(lobby.id, bob.id, first.id).await.unwrap();
    assert!(!back.changed);
    assert_eq!(back.value.last_read, Some(last.id));
    assert_eq!(back.value.unread, 0);
    assert_eq!(
        store.last_message(lobby.id).await.unwrap().map(|m| m.id),
        Some(last.id)
    );
    store.delete_message(last.id, None).await.unwrap();
    let newest = store.last_message(lobby.id).await.unwrap().unwrap();
    assert_eq!(newest.body, "mine", "the newest live message");

    let cid = user(&*store, "cid").await;
    let stranger = store.mark_read(lobby.id, cid.id, first.id).await;
    assert!(matches!(stranger, Err(Error::NotFound(_))), "{stranger:?}");
}

pub async fn mentions_are_kept_with_the_message_and_counted_after_the_marker(
    store: Arc<dyn Store>,
) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let den = room(&*store, "den", &ada).await;
    for (r, u) in [(&lobby, &bob), (&lobby, &cid), (&den, &bob)] {
        store
            .add_member(r.id, u.id, RoomRole::Member)
            .await
            .unwrap();
    }
    let both = mention(&*store, &lobby, &ada, "@bob @cid look", &[&bob, &cid]).await;
    assert_eq!(both.mentions, [bob.id, cid.id]);
    assert_eq!(
        store.message(both.id).await.unwrap().unwrap().mentions,
        both.mentions
    );
    mention(&*store, &lobby, &ada, "@bob again", &[&bob]).await;
    mention(&*store, &den, &ada, "@bob elsewhere", &[&bob]).await;
    assert_eq!(state(&*store, &lobby, &bob).await.mentions, 2);
    assert_eq!(state(&*store, &lobby, &cid).await.mentions, 1);
    assert_eq!(state(&*store, &den, &bob).await.mentions, 1);

    // An edit replaces them; a deletion takes them away; reading past them clears them.
    let edited = store
        .edit_message(both.id, "@cid only", &[cid.id])
        .await
        .unwrap();
    assert_eq!(edited.mentions, [cid.id]);
    assert_eq!(state(&*store, &lobby, &bob).await.mentions, 1);
    store.delete_message(both.id, None).await.unwrap();
    assert_eq!(state(&*store, &lobby, &cid).await.mentions, 0);
    let newest = store.last_message(lobby.id).await.unwrap().unwrap();
    store.mark_read(lobby.id, bob.id, newest.id).await.unwrap();
    assert_eq!(state(&*store, &lobby, &bob).await.mentions, 0);
    assert_eq!(state(&*store, &den, &bob).await.mentions, 1);
}

/// Memberships written before read markers have no `last_read`; the next startup gives each
/// its room's newest message (a tombstone too: members of an upgraded database have read
/// everything so far), keeps a marker already set, and changes nothing when run again. A
/// member of a room without messages keeps a null marker across startups, so what is sent
/// later stays unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_read_markers_from_an_older_confab_are_set_at_startup() {
    let Some((uri, db, raw)) = mongo_as_left_by_an_older_confab().await else {
        return;
    };
    let id = |n: u8| ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
    let now = bson::DateTime::now();
    old_users(&raw, &[(1, "ada"), (2, "bob"), (3, "cid")]).await;
    // "lobby" (4) has messages, the newest a tombstone; "quiet" (5) has none.
    let rooms = raw.collection::<bson::Document>("rooms");
    for (n, name, seq) in [(4, "lobby", 3_i64), (5, "quiet", 0)] {
        rooms
            .insert_one(bson::doc! {
                "_id": id(n), "name": name, "name_key": name, "key_version": 2_i64,
                "created_by": id(1), "created_at": now, "seq": seq, "visibility": "public",
            })
            .await
            .expect("an old room");
    }
    let messages = raw.collection::<bson::Document>("messages");
    for (n, sender, seq) in [(20, 1, 1_i64), (21, 2, 2), (22, 1, 3)] {
        let mut message = bson::doc! {
            "_id": id(n), "room_id": id(4), "sender_id": id(sender), "body": format!("m{n}"),
            "created_at": now, "seq": seq,
        };
        if n == 22 {
            message.insert("body", "");
            message.insert("deleted_at", now);
        }
        messages.insert_one(message).await.expect("an old message");
    }
    let memberships = raw.collection::<bson::Document>("memberships");
    for (n, room, user, role) in [
        (10, 4, 1, "owner"),
        (11, 4, 2, "member"),
        (12, 5, 1, "owner"),
        (13, 5, 2, "member"),
        (14, 4, 3, "member"),
    ] {
        let mut membership = bson::doc! {
            "_id": id(n), "room_id": id(room), "user_id": id(user), "joined_at": now,
            "role": role,
        };
        if n == 14 {
            // Already marked (by an instance that knows read markers): kept.
            membership.insert("last_read", id(20));
        }
        memberships
            .insert_one(membership)
            .await
            .expect("an old membership");
    }

    let store = mongo_instance(&uri, &db).await;
    let [lobby, quiet] = [id(4).into(), id(5).into()];
    let [ada, bob, cid] = [id(1).into(), id(2).into(), id(3).into()];
    let read_all = ReadState {
        last_read: Some(id(22).into()),
        unread: 0,
        mentions: 0,
    };
    async fn state(store: &dyn Store, room: RoomId, user: UserId) -> ReadState {
        store
            .read_state(room, user)
            .await
            .unwrap()
            .expect("a member")
    }
    assert_eq!(state(&*store, lobby, ada).await, read_all);
    assert_eq!(state(&*store, lobby, bob).await, read_all);
    assert_eq!(
        state(&*store, lobby, cid).await,
        ReadState {
            last_read: Some(id(20).into()),
            unread: 1,
            mentions: 0
        },
        "a marker already set is kept; the tombstone is not unread"
    );
    assert_eq!(state(&*store, quiet, bob).await, ReadState::default());

    // Sent after the upgrade: unread, in the old empty room and in a new empty one alike.
    let ada_user = store.user(ada).await.unwrap().expect("ada");
    let quiet_room = store.room(quiet).await.unwrap().expect("quiet");
    send(&*store, &quiet_room, &ada_user, "after", None).await;
    let fresh = room(&*store, "fresh", &ada_user).await;
    store
        .add_member(fresh.id, bob, RoomRole::Member)
        .await
        .unwrap();
    send(&*store, &fresh, &ada_user, "after", None).await;
    let unread_one = ReadState {
        last_read: None,
        unread: 1,
        mentions: 0,
    };
    assert_eq!(state(&*store, quiet, bob).await, unread_one);
    assert_eq!(state(&*store, fresh.id, bob).await, unread_one);

    drop(store);
    let store = mongo_instance(&uri, &db).await;
    assert_eq!(
        state(&*store, quiet, bob).await,
        unread_one,
        "a second startup changes nothing"
    );
    assert_eq!(state(&*store, fresh.id, bob).await, unread_one);
    assert_eq!(state(&*store, lobby, bob).await, read_all);
    assert_eq!(
        state(&*store, lobby, cid).await.last_read,
        Some(id(20).into())
    );
}

pub async fn a_marker_moves_only_to_a_message_of_its_room(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let den = room(&*store, "den", &bob).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    send(&*store, &lobby, &ada, "unread", None).await;
    let elsewhere = send(&*store, &den, &bob, "newer, elsewhere", None)
        .await
        .value;
    let tried = store
        .mark_read(lobby.id, bob.id, elsewhere.id)
        .await
        .unwrap();
    assert!(!tried.changed);
    assert_eq!(tried.value.unread, 1);
}

pub async fn counts_stop_at_the_cap(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let over = usize::try_from(confab::store::COUNT_CAP).unwrap() + 2;
    for i in 0..over {
        mention(&*store, &lobby, &ada, &format!("@bob {i}"), &[&bob]).await;
    }
    let capped = state(&*store, &lobby, &bob).await;
    assert_eq!(
        (capped.unread, capped.mentions),
        (confab::store::COUNT_CAP, confab::store::COUNT_CAP)
    );
}
