//! Each user's own log and the checkpoints of their `myEvents` streams, the same on every store.

use std::{collections::HashSet, sync::Arc};

use confab::{
    model::{MessageId, RemovalReason, RoomEvent, RoomId, UserEventKind},
    store::{CHECKPOINTS_KEPT, Store},
};

use super::{mongo_instance, room, user};

fn joined(room: RoomId) -> UserEventKind {
    UserEventKind::Joined {
        room_id: room,
        after: None,
    }
}

pub async fn a_users_log_counts_up_from_one_per_user_and_reads_back_in_order(
    store: Arc<dyn Store>,
) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    assert_eq!(store.user_log_bounds(ada.id).await.unwrap(), (0, 0));
    let kinds = [
        joined(lobby.id),
        UserEventKind::ReadMoved { room_id: lobby.id },
        UserEventKind::Removed {
            room_id: lobby.id,
            reason: RemovalReason::Kicked,
        },
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let entry = store.append_user_event(ada.id, kind.clone()).await.unwrap();
        assert_eq!(
            (entry.user_id, entry.pos, &entry.kind),
            (ada.id, i as u64 + 1, kind)
        );
    }
    let bobs = store
        .append_user_event(bob.id, joined(lobby.id))
        .await
        .unwrap();
    assert_eq!(bobs.pos, 1, "each user counts on their own");
    let all = store.user_events_after(ada.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| &e.kind).collect::<Vec<_>>(),
        kinds.iter().collect::<Vec<_>>()
    );
    let later = store.user_events_after(ada.id, 1, 1).await.unwrap();
    assert_eq!(later.iter().map(|e| e.pos).collect::<Vec<_>>(), [2]);
    assert_eq!(store.user_log_bounds(ada.id).await.unwrap(), (3, 1));
}

pub async fn log_entries_are_announced_on_the_users_channel(store: Arc<dyn Store>) {
    let mut events = store.take_events().expect("the event channel");
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let entry = store
        .append_user_event(ada.id, joined(lobby.id))
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("announced in time")
            .expect("an event");
        if let RoomEvent::ForUser(announced) = event {
            assert_eq!(announced, entry);
            assert_eq!(
                RoomEvent::ForUser(announced).room_id(),
                confab::model::user_channel(ada.id)
            );
            return;
        }
    }
}

pub async fn concurrent_appends_take_every_position_once(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append_user_event(ada.id, joined(lobby.id)).await })
        })
        .collect();
    let mut positions = HashSet::new();
    for task in tasks {
        positions.insert(task.await.unwrap().unwrap().pos);
    }
    assert_eq!(positions, (1..=16).collect::<HashSet<u64>>());
    let stored = store.user_events_after(ada.id, 0, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.pos).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<u64>>()
    );
}

pub async fn checkpoints_read_back_for_their_user_only_and_the_newest_are_kept(
    store: Arc<dyn Store>,
) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let other = room(&*store, "other", &ada).await;
    let positions = vec![
        (lobby.id, Some(MessageId::from_bytes([7; 12]))),
        (other.id, None),
    ];
    let first = store
        .save_checkpoint(ada.id, positions.clone())
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(ada.id, first).await.unwrap(),
        Some(positions.clone())
    );
    assert_eq!(
        store.checkpoint(bob.id, first).await.unwrap(),
        None,
        "not bob's"
    );
    let mut ids = vec![first];
    for i in 0..CHECKPOINTS_KEPT {
        let rooms = vec![(lobby.id, Some(MessageId::from_bytes([i as u8; 12])))];
        ids.push(store.save_checkpoint(ada.id, rooms).await.unwrap());
    }
    assert_eq!(
        store.checkpoint(ada.id, first).await.unwrap(),
        None,
        "the oldest went"
    );
    let second = ids[1];
    assert_eq!(
        store.checkpoint(ada.id, second).await.unwrap(),
        Some(vec![(lobby.id, Some(MessageId::from_bytes([0; 12])))]),
        "the newest {CHECKPOINTS_KEPT} stay"
    );
    let newest = *ids.last().unwrap();
    assert!(store.checkpoint(ada.id, newest).await.unwrap().is_some());
}

/// Two instances appending to one user's log at once take every position once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_appends_on_two_instances_take_every_position_once() {
    let Some(uri) = super::support::mongo::server_uri() else {
        eprintln!("skipped: the mongo store is not reachable");
        return;
    };
    let db = super::support::mongo::fresh_database();
    let instances = [
        mongo_instance(&uri, &db).await,
        mongo_instance(&uri, &db).await,
    ];
    let ada = user(&*instances[0], "ada").await;
    let lobby = room(&*instances[0], "lobby", &ada).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = instances[i % 2].clone();
            tokio::spawn(async move { store.append_user_event(ada.id, joined(lobby.id)).await })
        })
        .collect();
    let mut positions = HashSet::new();
    for task in tasks {
        positions.insert(task.await.unwrap().expect("every append lands").pos);
    }
    assert_eq!(positions, (1..=16).collect::<HashSet<u64>>());
}
