//! Read state: markers, unread and mention counts, the same on every store.

use std::sync::Arc;

use confab::{
    error::Error,
    model::{ReadState, RoomRole, User},
    store::{NewMessage, Store},
};

use super::{room, send, user};

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
