//! The delivery checks: what every user heard against what was acknowledged.

use std::sync::Arc;

use super::{seed::Shape, socket::Link, user::Sent};
use crate::client::IdBytes;

/// Lost, duplicated and otherwise wrong deliveries, as the checks count them.
#[derive(Default, Debug)]
pub(super) struct Verdict {
    pub(super) owed: u64,
    pub(super) lost: u64,
    pub(super) duplicated: u64,
    pub(super) unknown: u64,
    pub(super) room_owed: u64,
    pub(super) room_lost: u64,
    pub(super) room_duplicated: u64,
    pub(super) room_unchecked: u64,
    pub(super) socket_errors: Vec<String>,
}

/// Compares what every user heard with what was acknowledged.
pub(super) fn check(
    shape: &Shape,
    links: &[Arc<Link>],
    sent: &[Sent],
    unacked: &[(u32, u32)],
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_room: Vec<Vec<(u32, u32)>> = vec![Vec::new(); shape.rooms.len()];
    let mut ids_by_room: Vec<Vec<IdBytes>> = vec![Vec::new(); shape.rooms.len()];
    for s in sent {
        by_room[s.room as usize].push((s.sender, s.seq));
        ids_by_room[s.room as usize].push(s.id);
    }
    for ids in &mut ids_by_room {
        ids.sort_unstable();
    }
    let mut unacked = unacked.to_vec();
    unacked.sort_unstable();
    for (u, link) in links.iter().enumerate() {
        let heard = link.heard();
        verdict.socket_errors.extend(
            heard
                .errors
                .iter()
                .take(1)
                .map(|e| format!("user {u}: {e}")),
        );
        // myEvents: every message of every room of the user, once.
        let mut owed: Vec<(u32, u32)> = shape.of_user[u]
            .iter()
            .flat_map(|&r| by_room[r as usize].iter().copied())
            .collect();
        owed.sort_unstable();
        let mut got = heard.activity.clone();
        got.sort_unstable();
        verdict.owed += owed.len() as u64;
        verdict.duplicated += heard.out_of_order;
        let (lost, extra) = difference(&owed, &got);
        verdict.lost += lost;
        verdict.duplicated += extra
            .iter()
            .filter(|m| owed.binary_search(m).is_ok())
            .count() as u64;
        verdict.unknown += extra
            .iter()
            .filter(|m| owed.binary_search(m).is_err() && unacked.binary_search(m).is_err())
            .count() as u64;
        // roomEvents: each session, from its bound to its last delivery (or to the end).
        for session in &heard.sessions {
            let Some(bound) = session.bound else {
                verdict.room_unchecked += 1;
                continue;
            };
            let ids = &ids_by_room[session.room as usize];
            let from = ids.partition_point(|id| *id <= bound);
            let to = match (session.closed, session.received.last()) {
                (false, _) => ids.len(),
                (true, Some(last)) => ids.partition_point(|id| id <= last),
                (true, None) => from,
            };
            let owed = &ids[from..to.max(from)];
            let got: Vec<IdBytes> = session
                .received
                .iter()
                .copied()
                .filter(|id| *id > bound)
                .collect();
            verdict.room_owed += owed.len() as u64;
            verdict.room_duplicated += session.out_of_order;
            verdict.room_lost += difference(owed, &got).0;
        }
    }
    verdict
}

/// How many of `owed` are missing from `got` (both sorted), and what `got` has beyond `owed`
/// (a second copy counts as beyond).
fn difference<T: Ord + Copy>(owed: &[T], got: &[T]) -> (u64, Vec<T>) {
    let (mut i, mut j, mut lost, mut extra) = (0, 0, 0u64, Vec::new());
    while i < owed.len() || j < got.len() {
        match (owed.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                lost += 1;
                i += 1;
            }
            (Some(_), None) => {
                lost += 1;
                i += 1;
            }
            (_, Some(b)) => {
                extra.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (lost, extra)
}
