//! Rooms for teams: visibility, direct rooms, roles and ownership, bans, invitations and the
//! moderation log, the same on every store.

use std::{collections::HashSet, sync::Arc};

use confab::{
    error::Error,
    model::{ModerationAction, RoomEvent, RoomRole, RoomVisibility},
    store::{Departure, NewModerationEntry, NewRoom, RoomUpdate, Store},
};

use super::{NONE, first, next_event, room, send, user};

fn private(name: &str, creator: &confab::model::User, topic: Option<&str>) -> NewRoom {
    NewRoom {
        name: name.into(),
        creator: creator.id,
        visibility: RoomVisibility::Private,
        topic: topic.map(str::to_owned),
    }
}

async fn role_of(
    store: &dyn Store,
    room: confab::model::RoomId,
    user: &confab::model::User,
) -> Option<RoomRole> {
    store
        .membership(room, user.id)
        .await
        .unwrap()
        .map(|m| m.role)
}

pub async fn a_room_has_a_visibility_a_topic_and_its_creator_as_owner(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let open = room(&*store, "open", &ada).await;
    let hidden = store
        .create_room(private("hidden", &ada, Some("plans")))
        .await
        .unwrap();
    assert_eq!(
        (open.visibility, open.topic.as_deref(), open.is_direct()),
        (RoomVisibility::Public, None, false)
    );
    assert_eq!(store.room(hidden.id).await.unwrap(), Some(hidden.clone()));
    assert_eq!(hidden.visibility, RoomVisibility::Private);
    assert_eq!(hidden.topic.as_deref(), Some("plans"));
    let mine = store.membership(hidden.id, ada.id).await.unwrap().unwrap();
    assert_eq!((mine.role, mine.user.id), (RoomRole::Owner, ada.id));
    assert!(store.membership(hidden.id, bob.id).await.unwrap().is_none());

    let directory = store.rooms(first(10, NONE)).await.unwrap();
    let listed: Vec<_> = directory.items.iter().map(|r| r.id).collect();
    assert_eq!(listed, [open.id], "the directory lists public rooms only");
    assert_eq!(
        store
            .rooms_of(ada.id, first(10, NONE))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

pub async fn a_direct_room_is_one_per_pair_and_takes_no_name(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let created = store.direct_room(ada.id, bob.id).await.unwrap();
    assert!(created.changed);
    let dm = created.value;
    assert!(dm.is_direct());
    assert_eq!(dm.visibility, RoomVisibility::Private);
    assert_eq!(dm.direct, Some(confab::store::direct_pair(ada.id, bob.id)));
    let again = store.direct_room(bob.id, ada.id).await.unwrap();
    assert_eq!((again.value.id, again.changed), (dm.id, false));
    for person in [&ada, &bob] {
        assert_eq!(
            role_of(&*store, dm.id, person).await,
            Some(RoomRole::Member)
        );
    }
    assert_eq!(store.member_count(dm.id).await.unwrap(), 2);
    // Another pair has its own; names are untouched; the directory does not list it.
    let other = store.direct_room(ada.id, cid.id).await.unwrap().value;
    assert_ne!(other.id, dm.id);
    room(&*store, "bob", &ada).await;
    let listed = store.rooms(first(10, NONE)).await.unwrap().items;
    assert!(listed.iter().all(|r| !r.is_direct()), "{listed:?}");
    // Nobody can rename it into a name's place.
    let renamed = store
        .update_room(
            dm.id,
            RoomUpdate {
                topic: Some(Some("t".into())),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.value.direct, dm.direct);
}

pub async fn concurrent_direct_rooms_of_one_pair_are_one(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let (a, b) = if i % 2 == 0 {
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
    assert_eq!(
        store
            .rooms_of(ada.id, first(10, NONE))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

pub async fn update_room_changes_what_it_is_given(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    room(&*store, "den", &ada).await;
    let renamed = store
        .update_room(
            lobby.id,
            RoomUpdate {
                name: Some("Hall".into()),
                topic: Some(Some("welcome".into())),
                visibility: Some(RoomVisibility::Private),
            },
        )
        .await
        .unwrap();
    assert!(renamed.changed);
    assert_eq!(
        (
            renamed.value.name.as_str(),
            renamed.value.topic.as_deref(),
            renamed.value.visibility
        ),
        ("Hall", Some("welcome"), RoomVisibility::Private)
    );
    assert_eq!(
        store.room(lobby.id).await.unwrap(),
        Some(renamed.value.clone())
    );
    let same = store
        .update_room(
            lobby.id,
            RoomUpdate {
                name: Some("Hall".into()),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(!same.changed, "nothing changed");
    let cleared = store
        .update_room(
            lobby.id,
            RoomUpdate {
                topic: Some(None),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.value.topic, None);
    // Public again, its new name is taken and its old one free.
    store
        .update_room(
            lobby.id,
            RoomUpdate {
                visibility: Some(RoomVisibility::Public),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap();
    room(&*store, "lobby", &ada).await;
    assert!(
        store
            .create_room(NewRoom::public("hall", ada.id))
            .await
            .is_err()
    );
    let taken = store
        .update_room(
            lobby.id,
            RoomUpdate {
                name: Some("DEN".into()),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(taken, Error::Conflict { field: "name", .. }),
        "{taken:?}"
    );
    let missing = store
        .update_room(confab::model::ObjectId::new().into(), RoomUpdate::default())
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
}

pub async fn roles_change_only_from_the_role_expected(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let promoted = store
        .set_role(lobby.id, bob.id, RoomRole::Admin, Some(RoomRole::Member))
        .await
        .unwrap();
    assert!(promoted.changed);
    assert_eq!(promoted.value.role, RoomRole::Admin);
    let stale = store
        .set_role(lobby.id, bob.id, RoomRole::Owner, Some(RoomRole::Member))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, Error::Conflict { field: "role", .. }),
        "{stale:?}"
    );
    assert_eq!(
        role_of(&*store, lobby.id, &bob).await,
        Some(RoomRole::Admin)
    );
    let same = store
        .set_role(lobby.id, bob.id, RoomRole::Admin, None)
        .await
        .unwrap();
    assert!(!same.changed);
    let stranger = store
        .set_role(lobby.id, cid.id, RoomRole::Admin, None)
        .await
        .unwrap_err();
    assert!(matches!(stranger, Error::NotFound(_)), "{stranger:?}");
    // Joining again keeps the role.
    let rejoin = store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert!(!rejoin.changed);
    assert_eq!(
        role_of(&*store, lobby.id, &bob).await,
        Some(RoomRole::Admin)
    );
}

pub async fn memberships_page_in_join_order(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let mut people = vec![ada.clone()];
    for name in ["bob", "cid", "dee", "eve"] {
        let u = user(&*store, name).await;
        store
            .add_member(lobby.id, u.id, RoomRole::Member)
            .await
            .unwrap();
        people.push(u);
    }
    let all = store.memberships(lobby.id, None, 10).await.unwrap();
    let names: Vec<_> = all.iter().map(|m| m.user.username.as_str()).collect();
    assert_eq!(names, ["ada", "bob", "cid", "dee", "eve"]);
    assert_eq!(all[0].role, RoomRole::Owner);
    assert!(all.windows(2).all(|w| w[0].joined_at <= w[1].joined_at));
    let page = store
        .memberships(lobby.id, Some(people[1].id), 2)
        .await
        .unwrap();
    let names: Vec<_> = page.iter().map(|m| m.user.username.as_str()).collect();
    assert_eq!(names, ["cid", "dee"]);
    let page = store
        .memberships(lobby.id, Some(people[4].id), 2)
        .await
        .unwrap();
    assert!(page.is_empty());
}

pub async fn ownership_passes_to_the_longest_standing_admin_else_member(store: Arc<dyn Store>) {
    let mut events = store.take_events().unwrap();
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let dee = user(&*store, "dee").await;
    let lobby = room(&*store, "lobby", &ada).await;
    for u in [&bob, &cid, &dee] {
        store
            .add_member(lobby.id, u.id, RoomRole::Member)
            .await
            .unwrap();
    }
    store
        .set_role(lobby.id, dee.id, RoomRole::Admin, None)
        .await
        .unwrap();
    store
        .remove_member(lobby.id, ada.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(
        role_of(&*store, lobby.id, &dee).await,
        Some(RoomRole::Owner)
    );
    assert_eq!(
        role_of(&*store, lobby.id, &bob).await,
        Some(RoomRole::Member)
    );
    store
        .remove_member(lobby.id, dee.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(
        role_of(&*store, lobby.id, &bob).await,
        Some(RoomRole::Owner)
    );
    // A member who leaves hands nothing over.
    store
        .remove_member(lobby.id, cid.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(
        role_of(&*store, lobby.id, &bob).await,
        Some(RoomRole::Owner)
    );
    store
        .remove_member(lobby.id, bob.id, Departure::Left)
        .await
        .unwrap();
    assert_eq!(store.member_count(lobby.id).await.unwrap(), 0);
    assert!(
        store.room(lobby.id).await.unwrap().is_some(),
        "an empty room stays"
    );

    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let last = matches!(&event, RoomEvent::MemberLeft { user, .. } if user.id == bob.id);
        match event {
            RoomEvent::MemberLeft { user, .. } => seen.push(format!("{} left", user.username)),
            RoomEvent::MemberRoleChanged { user, role, .. } => {
                seen.push(format!("{} {role:?}", user.username));
            }
            _ => {}
        }
        if last {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "dee Admin",
            "ada left",
            "dee Owner",
            "dee left",
            "bob Owner",
            "cid left",
            "bob left"
        ]
    );
}

pub async fn a_ban_removes_the_member_and_refuses_them_until_lifted(store: Arc<dyn Store>) {
    let mut events = store.take_events().unwrap();
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let banned = store
        .ban(lobby.id, bob.id, ada.id, Some("spam"))
        .await
        .unwrap();
    assert!(banned.changed);
    assert!(!store.is_member(lobby.id, bob.id).await.unwrap());
    assert!(store.is_banned(lobby.id, bob.id).await.unwrap());
    let refused = store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Forbidden(_)), "{refused:?}");
    assert!(!store.is_member(lobby.id, bob.id).await.unwrap());
    let again = store.ban(lobby.id, bob.id, ada.id, None).await.unwrap();
    assert!(!again.changed, "banned already");
    let uninvited = store.invite(lobby.id, bob.id, ada.id).await.unwrap_err();
    assert!(matches!(uninvited, Error::Forbidden(_)), "{uninvited:?}");
    assert!(store.invitation(lobby.id, bob.id).await.unwrap().is_none());
    // A ban ahead of time, of someone not a member; it takes their invitation away.
    store.invite(lobby.id, cid.id, ada.id).await.unwrap();
    assert!(
        store
            .ban(lobby.id, cid.id, ada.id, None)
            .await
            .unwrap()
            .changed
    );
    assert!(store.invitation(lobby.id, cid.id).await.unwrap().is_none());
    // Lifted: they may join again.
    assert!(store.unban(lobby.id, bob.id).await.unwrap().changed);
    assert!(!store.unban(lobby.id, bob.id).await.unwrap().changed);
    assert!(!store.is_banned(lobby.id, bob.id).await.unwrap());
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    // A kick is announced as one, by whom.
    store
        .remove_member(lobby.id, bob.id, Departure::Kicked { by: ada.id })
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        match next_event(&mut events).await {
            RoomEvent::MemberBanned {
                user, by, reason, ..
            } => seen.push(format!(
                "{} banned by {} ({reason:?})",
                user.username, by.username
            )),
            RoomEvent::MemberKicked { user, by, .. } => {
                seen.push(format!("{} kicked by {}", user.username, by.username));
            }
            RoomEvent::MemberJoined { user, .. } if user.id == bob.id => {
                seen.push("bob joined".to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(
        seen[..],
        [
            "bob joined",
            "bob banned by ada (Some(\"spam\"))",
            "bob joined",
            "bob kicked by ada"
        ],
        "the ban of a non-member announces nothing"
    );
}

pub async fn a_join_racing_a_ban_ends_with_the_user_out(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let lobby = room(&*store, "lobby", &ada).await;
    for i in 0..10 {
        let someone = user(&*store, &format!("user{i}")).await;
        let join = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_member(lobby.id, someone.id, RoomRole::Member)
                    .await
            })
        };
        let ban = {
            let store = store.clone();
            tokio::spawn(async move { store.ban(lobby.id, someone.id, ada.id, None).await })
        };
        let _ = join.await.unwrap();
        ban.await.unwrap().unwrap();
        assert!(
            !store.is_member(lobby.id, someone.id).await.unwrap(),
            "round {i}: a banned user stayed a member"
        );
    }
}

pub async fn an_invitation_is_one_per_invitee_and_room(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let hidden = store
        .create_room(private("hidden", &ada, None))
        .await
        .unwrap();
    let other = store
        .create_room(private("other", &ada, None))
        .await
        .unwrap();
    let first_invite = store.invite(hidden.id, bob.id, ada.id).await.unwrap();
    assert!(first_invite.changed);
    let invitation = first_invite.value;
    assert_eq!(
        (invitation.room_id, invitation.invitee, invitation.inviter),
        (hidden.id, bob.id, ada.id)
    );
    let second = store.invite(hidden.id, bob.id, ada.id).await.unwrap();
    assert_eq!((second.value, second.changed), (invitation.clone(), false));
    store.invite(other.id, bob.id, ada.id).await.unwrap();
    assert_eq!(store.invitation_count(bob.id).await.unwrap(), 2);
    let listed = store.invitations_of(bob.id, 10).await.unwrap();
    let rooms: Vec<_> = listed.iter().map(|i| i.room_id).collect();
    assert_eq!(rooms, [other.id, hidden.id], "newest first");
    assert_eq!(store.invitations_of(bob.id, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.invitation(hidden.id, bob.id).await.unwrap(),
        Some(invitation)
    );
    // Joining spends it; declining takes the other back.
    store
        .add_member(hidden.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    assert!(store.invitation(hidden.id, bob.id).await.unwrap().is_none());
    assert!(store.remove_invitation(other.id, bob.id).await.unwrap());
    assert!(!store.remove_invitation(other.id, bob.id).await.unwrap());
    assert_eq!(store.invitation_count(bob.id).await.unwrap(), 0);
    // Concurrent invitations of one invitee to one room store one.
    let cid = user(&*store, "cid").await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.invite(other.id, cid.id, ada.id).await })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        created += usize::from(call.await.unwrap().unwrap().changed);
    }
    assert_eq!(created, 1);
    assert_eq!(store.invitation_count(cid.id).await.unwrap(), 1);
    // A deleted account's invitations go with it.
    store.delete_user(cid.id, chrono::Utc::now()).await.unwrap();
    assert_eq!(store.invitation_count(cid.id).await.unwrap(), 0);
}

pub async fn the_moderation_log_lists_entries_newest_first(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    let den = room(&*store, "den", &ada).await;
    let message = send(&*store, &lobby, &ada, "hi", None).await.value;
    let actions = [
        ModerationAction::Kick,
        ModerationAction::Ban,
        ModerationAction::Unban,
        ModerationAction::RoleChange,
        ModerationAction::RoomUpdate,
        ModerationAction::MessageDelete,
    ];
    let mut written = Vec::new();
    for action in actions {
        let entry = store
            .log_moderation(NewModerationEntry {
                room_id: lobby.id,
                action,
                actor: ada.id,
                target: (action != ModerationAction::RoomUpdate).then_some(bob.id),
                message: (action == ModerationAction::MessageDelete).then_some(message.id),
                reason: (action == ModerationAction::Ban).then(|| "spam".to_owned()),
            })
            .await
            .unwrap();
        assert_eq!(entry.action, action);
        written.push(entry);
    }
    store
        .log_moderation(NewModerationEntry {
            room_id: den.id,
            action: ModerationAction::Kick,
            actor: ada.id,
            target: Some(bob.id),
            message: None,
            reason: None,
        })
        .await
        .unwrap();
    let all = store.moderation_log(lobby.id, None, 10).await.unwrap();
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);
    let page = store.moderation_log(lobby.id, None, 2).await.unwrap();
    assert_eq!(page, newest_first[..2]);
    let next = store
        .moderation_log(lobby.id, Some(page[1].id), 3)
        .await
        .unwrap();
    assert_eq!(next, newest_first[2..5]);
    assert!(
        written
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

pub async fn a_moderators_deletion_names_the_moderator(store: Arc<dyn Store>) {
    let mut events = store.take_events().unwrap();
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let own = send(&*store, &lobby, &bob, "mine", None).await.value;
    let theirs = send(&*store, &lobby, &bob, "spam", None).await.value;
    store.delete_message(own.id, None).await.unwrap();
    let deleted = store.delete_message(theirs.id, Some(ada.id)).await.unwrap();
    assert_eq!(deleted.value.deleted_by, Some(ada.id));
    let stored = store.message(theirs.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.is_deleted(), stored.deleted_by),
        (true, Some(ada.id))
    );
    assert_eq!(
        store.message(own.id).await.unwrap().unwrap().deleted_by,
        None
    );
    let replayed = store.messages_after(lobby.id, own.id, 10).await.unwrap();
    assert_eq!(replayed[0].deleted_by, Some(ada.id));

    let mut deletions = Vec::new();
    while deletions.len() < 2 {
        if let RoomEvent::MessageDeleted { deleted_by, .. } = next_event(&mut events).await {
            deletions.push(deleted_by);
        }
    }
    assert_eq!(deletions, [None, Some(ada.id)]);
}

pub async fn room_updates_and_role_changes_are_announced(store: Arc<dyn Store>) {
    let mut events = store.take_events().unwrap();
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store
        .add_member(lobby.id, bob.id, RoomRole::Member)
        .await
        .unwrap();
    let updated = store
        .update_room(
            lobby.id,
            RoomUpdate {
                topic: Some(Some("news".into())),
                ..RoomUpdate::default()
            },
        )
        .await
        .unwrap()
        .value;
    store
        .update_room(lobby.id, RoomUpdate::default())
        .await
        .unwrap(); // nothing changed, nothing announced
    store
        .set_role(lobby.id, bob.id, RoomRole::Admin, None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next_event(&mut events).await {
            RoomEvent::RoomUpdated(room) => seen.push(RoomEvent::RoomUpdated(room)),
            event @ RoomEvent::MemberRoleChanged { .. } => seen.push(event),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            RoomEvent::RoomUpdated(updated),
            RoomEvent::MemberRoleChanged {
                room_id: lobby.id,
                user: bob,
                role: RoomRole::Admin
            }
        ]
    );
}

pub async fn delete_room_takes_its_bans_invitations_and_log(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let cid = user(&*store, "cid").await;
    let lobby = room(&*store, "lobby", &ada).await;
    store.ban(lobby.id, bob.id, ada.id, None).await.unwrap();
    store.invite(lobby.id, cid.id, ada.id).await.unwrap();
    store
        .log_moderation(NewModerationEntry {
            room_id: lobby.id,
            action: ModerationAction::Ban,
            actor: ada.id,
            target: Some(bob.id),
            message: None,
            reason: None,
        })
        .await
        .unwrap();
    store.delete_room(lobby.id).await.unwrap();
    assert!(!store.is_banned(lobby.id, bob.id).await.unwrap());
    assert_eq!(store.invitation_count(cid.id).await.unwrap(), 0);
    assert!(
        store
            .moderation_log(lobby.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn only_public_room_names_are_unique(store: Arc<dyn Store>) {
    let ada = user(&*store, "ada").await;
    let bob = user(&*store, "bob").await;
    let plans = store
        .create_room(private("plans", &ada, None))
        .await
        .unwrap();
    // Nobody learns a private room exists by trying its name.
    let theirs = store
        .create_room(private("Plans", &bob, None))
        .await
        .expect("private rooms' names are their own");
    let public = room(&*store, "PLANS", &bob).await;
    let to_public = RoomUpdate {
        visibility: Some(RoomVisibility::Public),
        ..RoomUpdate::default()
    };
    let taken = store
        .update_room(plans.id, to_public.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(taken, Error::Conflict { field: "name", .. }),
        "{taken:?}"
    );
    // A public room gone private frees its name for a public one.
    let to_private = RoomUpdate {
        visibility: Some(RoomVisibility::Private),
        ..RoomUpdate::default()
    };
    store.update_room(public.id, to_private).await.unwrap();
    store
        .update_room(plans.id, to_public.clone())
        .await
        .unwrap();
    let again = store.update_room(theirs.id, to_public).await.unwrap_err();
    assert!(
        matches!(again, Error::Conflict { field: "name", .. }),
        "{again:?}"
    );
}
