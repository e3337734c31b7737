//! Moderation: roles, kicks, bans, room updates, deleting others' messages, and the log of it.
//!
//! A room's owner and admins moderate it; the owner alone sets roles. Nobody acts on someone of
//! an equal or higher role (`Owner > Admin > Member`). Every action is logged in the room's
//! moderation log, which its owner and admins read. A direct room has no moderators.

use super::{ChatService, limits};
use crate::model::RemovalReason;
use crate::{
    auth::Caller,
    error::{Error, Result},
    model::{
        Membership, Message, MessageId, ModerationAction, ModerationEntry, ModerationId, Room,
        RoomId, RoomRole, RoomVisibility, UserId,
    },
    service::limiter::Kind,
    store::{Departure, NewModerationEntry, RoomUpdate},
};

/// Most entries of a moderation log one request may read, and the default.
pub const LOG_PAGE_MAX: usize = 100;
pub const LOG_PAGE_DEFAULT: usize = 50;

impl ChatService {
    /// The caller's membership of a room they moderate; `NOT_FOUND` when they may not see the
    /// room, `FORBIDDEN` when they do not moderate it.
    async fn moderator(&self, caller: &Caller, room: RoomId) -> Result<(Room, Membership)> {
        let seen = self.seen_room(caller, room).await?;
        match seen.membership {
            Some(mine) if mine.role.moderates() && !seen.room.is_direct() => Ok((seen.room, mine)),
            _ => Err(Error::forbidden(
                "only the room's owner and admins may do this",
            )),
        }
    }

    /// One moderation action of the caller, against their allowance.
    async fn take_moderation(&self, actor: UserId) -> Result<()> {
        self.take(
            Kind::Moderation,
            self.guards.rates.messages,
            &actor.to_hex(),
        )
        .await
    }

    async fn log(
        &self,
        room: RoomId,
        action: ModerationAction,
        actor: UserId,
        target: Option<UserId>,
        message: Option<MessageId>,
        reason: Option<String>,
    ) -> Result<ModerationEntry> {
        self.store
            .log_moderation(NewModerationEntry {
                room_id: room,
                action,
                actor,
                target,
                message,
                reason,
            })
            .await
    }

    /// A member of `room` that `mine` may act on: `NOT_FOUND` when `user` is not a member,
    /// `FORBIDDEN` when their role is not lower.
    async fn lower_member(
        &self,
        room: RoomId,
        mine: &Membership,
        user: UserId,
    ) -> Result<Membership> {
        if user == mine.user.id {
            return Err(Error::invalid("userId", "you cannot do this to yourself"));
        }
        let theirs = self
            .store
            .membership(room, user)
            .await?
            .ok_or_else(|| Error::not_found("they are not a member of this room"))?;
        if theirs.role >= mine.role {
            return Err(Error::forbidden(
                "you cannot act on a member whose role is equal to or higher than yours",
            ));
        }
        Ok(theirs)
    }

    /// Sets a member's role (the owner only). Making someone `OWNER` hands the room over: the
    /// old owner becomes an admin.
    pub async fn set_member_role(
        &self,
        caller: &Caller,
        room: RoomId,
        user: UserId,
        role: RoomRole,
    ) -> Result<Membership> {
        let (_, mine) = self.moderator(caller, room).await?;
        if mine.role != RoomRole::Owner {
            return Err(Error::forbidden("only the room's owner may set roles"));
        }
        self.take_moderation(mine.user.id).await?;
        let theirs = self.lower_member(room, &mine, user).await?;
        let changed = if role == RoomRole::Owner {
            // Stepping down first means two concurrent hand-overs cannot both succeed.
            self.store
                .set_role(room, mine.user.id, RoomRole::Admin, Some(RoomRole::Owner))
                .await?;
            match self
                .store
                .set_role(room, user, RoomRole::Owner, Some(theirs.role))
                .await
            {
                Ok(written) => written,
                Err(e) => {
                    // Back, unless the room was handed on meanwhile (someone left).
                    let _ = self
                        .store
                        .set_role(room, mine.user.id, RoomRole::Owner, Some(RoomRole::Admin))
                        .await;
                    return Err(e);
                }
            }
        } else {
            self.store
                .set_role(room, user, role, Some(theirs.role))
                .await?
        };
        if changed.changed {
            self.log(
                room,
                ModerationAction::RoleChange,
                mine.user.id,
                Some(user),
                None,
                Some(format!("{} to {}", role_name(theirs.role), role_name(role))),
            )
            .await?;
        }
        Ok(changed.value)
    }

    /// Removes a member from a room; they may join again (a public room) or be invited again.
    pub async fn kick_member(&self, caller: &Caller, room: RoomId, user: UserId) -> Result<bool> {
        let (_, mine) = self.moderator(caller, room).await?;
        self.take_moderation(mine.user.id).await?;
        self.lower_member(room, &mine, user).await?;
        let kicked = self
            .store
            .remove_member(room, user, Departure::Kicked { by: mine.user.id })
            .await?;
        if kicked.changed {
            self.note_removed(user, room, RemovalReason::Kicked).await;
            self.log(
                room,
                ModerationAction::Kick,
                mine.user.id,
                Some(user),
                None,
                None,
            )
            .await?;
        }
        Ok(kicked.changed)
    }

    /// Bans a user from a room (a member, or anyone, ahead of time): they leave it and cannot
    /// join or be invited until unbanned. `false` when they were banned already.
    pub async fn ban_member(
        &self,
        caller: &Caller,
        room: RoomId,
        user: UserId,
        reason: Option<&str>,
    ) -> Result<bool> {
        let reason = reason
            .map(|r| limits::note("reason", r))
            .transpose()?
            .flatten();
        let (_, mine) = self.moderator(caller, room).await?;
        self.take_moderation(mine.user.id).await?;
        let member = self.store.is_member(room, user).await?;
        if member {
            self.lower_member(room, &mine, user).await?;
        } else if user == mine.user.id {
            return Err(Error::invalid("userId", "you cannot do this to yourself"));
        } else {
            self.live_user(user).await?;
        }
        let banned = self
            .store
            .ban(room, user, mine.user.id, reason.as_deref())
            .await?;
        if banned.changed {
            if member {
                self.note_removed(user, room, RemovalReason::Banned).await;
            }
            self.log(
                room,
                ModerationAction::Ban,
                mine.user.id,
                Some(user),
                None,
                reason,
            )
            .await?;
        }
        Ok(banned.changed)
    }

    /// Lifts a ban; `false` when there was none.
    pub async fn unban_member(&self, caller: &Caller, room: RoomId, user: UserId) -> Result<bool> {
        let (_, mine) = self.moderator(caller, room).await?;
        self.take_moderation(mine.user.id).await?;
        let lifted = self.store.unban(room, user).await?;
        if lifted.changed {
            self.log(
                room,
                ModerationAction::Unban,
                mine.user.id,
                Some(user),
                None,
                None,
            )
            .await?;
        }
        Ok(lifted.changed)
    }

    /// Changes a room's name, topic (blank: none) or visibility.
    pub async fn update_room(
        &self,
        caller: &Caller,
        room: RoomId,
        name: Option<&str>,
        topic: Option<&str>,
        visibility: Option<RoomVisibility>,
    ) -> Result<Room> {
        let update = RoomUpdate {
            name: name.map(limits::room_name).transpose()?,
            topic: topic.map(|t| limits::note("topic", t)).transpose()?,
            visibility,
        };
        let (before, mine) = self.moderator(caller, room).await?;
        self.take_moderation(mine.user.id).await?;
        let written = self.store.update_room(room, update).await?;
        if written.changed {
            let after = &written.value;
            let mut what = Vec::new();
            if after.name != before.name {
                what.push(format!("name: {:?} to {:?}", before.name, after.name));
            }
            if after.topic != before.topic {
                what.push("topic".to_owned());
            }
            if after.visibility != before.visibility {
                what.push(format!(
                    "visibility: {} to {}",
                    before.visibility.as_str().to_uppercase(),
                    after.visibility.as_str().to_uppercase()
                ));
            }
            self.log(
                room,
                ModerationAction::RoomUpdate,
                mine.user.id,
                None,
                None,
                Some(what.join("; ")),
            )
            .await?;
        }
        Ok(written.value)
    }

    /// Deletes a message as a moderator of its room (the author's role must be lower, or they
    /// must have left). Returns `None` when the caller does not moderate the room.
    pub(super) async fn moderator_delete(
        &self,
        caller: &Caller,
        message: &Message,
    ) -> Result<Option<Message>> {
        let Ok((_, mine)) = self.moderator(caller, message.room_id).await else {
            return Ok(None);
        };
        let author = self
            .store
            .membership(message.room_id, message.sender_id)
            .await?
            .map_or(RoomRole::Member, |m| m.role);
        if author >= mine.role {
            return Err(Error::forbidden(
                "you cannot delete the message of a member whose role is equal to or higher than yours",
            ));
        }
        self.take_moderation(mine.user.id).await?;
        let deleted = self
            .store
            .delete_message(message.id, Some(mine.user.id))
            .await?;
        if deleted.changed {
            self.log(
                message.room_id,
                ModerationAction::MessageDelete,
                mine.user.id,
                Some(message.sender_id),
                Some(message.id),
                None,
            )
            .await?;
        }
        Ok(Some(deleted.value))
    }

    /// A room's moderation log, newest first (owners and admins only), before the entry
    /// `before`; with whether older entries exist.
    pub async fn moderation_log(
        &self,
        caller: &Caller,
        room: RoomId,
        first: Option<i64>,
        before: Option<ModerationId>,
    ) -> Result<(Vec<ModerationEntry>, bool)> {
        let limit = match first {
            None => LOG_PAGE_DEFAULT,
            Some(n) if (0..=LOG_PAGE_MAX as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(Error::invalid(
                    "first",
                    format!("must be between 0 and {LOG_PAGE_MAX}"),
                ));
            }
        };
        self.moderator(caller, room).await?;
        let mut entries = self.store.moderation_log(room, before, limit + 1).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }
}

/// A role as the API spells it.
pub fn role_name(role: RoomRole) -> &'static str {
    match role {
        RoomRole::Owner => "OWNER",
        RoomRole::Admin => "ADMIN",
        RoomRole::Member => "MEMBER",
    }
}
