//! Changes to stored messages: edits (the author), deletions (the author, or the room's owner
//! and moderators: `moderation.rs` decides) and reactions (any member). The rules are pure ([`check`], [`react`]) and unit-tested
//! natively; [`Changes`] applies them: each change takes the next revision, is written in its
//! frame's own event after the outbox stores what was waiting (one commit for both), and its
//! frame goes to everyone once that commit is durable, in revision order with the messages.

use std::rc::Rc;

use worker::Result;

use super::outbox::Outbox;
use super::storage::{RoomStorage, Target, MAX_REACTIONS};
use crate::protocol::{Emoji, Reactions, ServerFrame};

/// One change a member asks for.
#[derive(Debug)]
pub enum Change<'a> {
    Edit {
        id: i64,
        content: &'a str,
    },
    Delete {
        id: i64,
    },
    React {
        id: i64,
        emoji: &'a Emoji,
        add: bool,
    },
}

impl Change<'_> {
    fn id(&self) -> i64 {
        match self {
            Change::Edit { id, .. } | Change::Delete { id } | Change::React { id, .. } => *id,
        }
    }
}

/// Why a change is refused; the sender gets it as an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownId,
    NotYours,
    AlreadyDeleted,
    TooManyReactions,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::UnknownId => "unknown message id",
            Refusal::NotYours => "not your message",
            Refusal::AlreadyDeleted => "message already deleted",
            Refusal::TooManyReactions => "too many reactions (limit 20 emoji per message)",
        }
    }
}

/// Whether `user` may make `change` to the message `target` (`None`: no such message);
/// `may_remove(author)`: whether `user` may delete what `author` wrote.
pub fn check(
    change: &Change,
    target: Option<&Target>,
    user: &str,
    may_remove: &dyn Fn(&str) -> bool,
) -> std::result::Result<(), Refusal> {
    let target = target.ok_or(Refusal::UnknownId)?;
    if target.deleted {
        return Err(Refusal::AlreadyDeleted);
    }
    let author = target.username.eq_ignore_ascii_case(user);
    match change {
        Change::Edit { .. } if !author => Err(Refusal::NotYours),
        Change::Delete { .. } if !(author || may_remove(&target.username)) => {
            Err(Refusal::NotYours)
        }
        _ => Ok(()),
    }
}

/// Applies `user`'s reaction `emoji` (added or taken back) to `reactions`; whether anything
/// changed (reacting twice, or taking back a reaction never made, changes nothing).
pub fn react(
    reactions: &mut Reactions,
    emoji: &str,
    user: &str,
    add: bool,
) -> std::result::Result<bool, Refusal> {
    if add {
        let full = reactions.len() >= MAX_REACTIONS;
        match reactions.get_mut(emoji) {
            Some(users) if users.iter().any(|u| u == user) => Ok(false),
            Some(users) => {
                users.push(user.to_owned());
                Ok(true)
            }
            None if full => Err(Refusal::TooManyReactions),
            None => {
                reactions.insert(emoji.to_owned(), vec![user.to_owned()]);
                Ok(true)
            }
        }
    } else {
        let Some(users) = reactions.get_mut(emoji) else {
            return Ok(false);
        };
        let before = users.len();
        users.retain(|u| u != user);
        let changed = users.len() != before;
        if users.is_empty() {
            reactions.remove(emoji);
        }
        Ok(changed)
    }
}

/// The room's changes to its messages.
pub struct Changes {
    storage: Rc<RoomStorage>,
    outbox: Rc<Outbox>,
    room: String,
}

impl Changes {
    pub fn new(storage: Rc<RoomStorage>, outbox: Rc<Outbox>, room: &str) -> Self {
        Self {
            storage,
            outbox,
            room: room.to_owned(),
        }
    }

    /// `user` asks for `change` at `now_ms` (`may_remove` as for [`check`]): applied, with the
    /// author of the message changed, or refused.
    pub fn apply(
        &self,
        user: &str,
        may_remove: &dyn Fn(&str) -> bool,
        change: Change,
        now_ms: i64,
    ) -> Result<std::result::Result<String, Refusal>> {
        // Every accepted message is stored first: the change sees it, and follows it.
        let group = self.outbox.store_waiting();
        let id = change.id();
        let target = self.storage.target(id)?;
        if let Err(refusal) = check(&change, target.as_ref(), user, may_remove) {
            return Ok(Err(refusal));
        }
        let author = target.map(|t| t.username).unwrap_or_default();
        let rev = self.outbox.next_rev();
        let room = self.room.as_str();
        let frame = match change {
            Change::Edit { id, content } => {
                self.storage.edit(id, content, now_ms, rev)?;
                ServerFrame::Edited {
                    id,
                    rev,
                    content,
                    edited_ts: now_ms,
                    username: &author,
                    room_id: room,
                }
                .to_json()
            }
            Change::Delete { id } => {
                self.storage.delete(id, user, rev)?;
                ServerFrame::Deleted {
                    id,
                    rev,
                    by: user,
                    room_id: room,
                }
                .to_json()
            }
            Change::React { id, emoji, add } => {
                let mut reactions = self.storage.reactions(id)?;
                match react(&mut reactions, emoji.as_str(), user, add) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(author)),
                    Err(refusal) => return Ok(Err(refusal)),
                }
                self.storage
                    .set_reaction(id, emoji.as_str(), user, add, rev)?;
                ServerFrame::Reactions {
                    id,
                    rev,
                    room_id: room,
                    reactions: &reactions,
                }
                .to_json()
            }
        };
        self.outbox.changed(group, rev, frame);
        Ok(Ok(author))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(author: &str, deleted: bool) -> Target {
        Target {
            username: author.to_owned(),
            deleted,
        }
    }

    const NOBODY_ELSE: &dyn Fn(&str) -> bool = &|_| false;
    const ANYONE: &dyn Fn(&str) -> bool = &|_| true;

    #[test]
    fn only_the_author_edits_and_the_author_or_a_moderator_deletes() {
        let bob = target("bob", false);
        let edit = Change::Edit {
            id: 1,
            content: "x",
        };
        let delete = Change::Delete { id: 1 };
        assert_eq!(check(&edit, Some(&bob), "bob", NOBODY_ELSE), Ok(()));
        assert_eq!(
            check(&edit, Some(&bob), "Bob", NOBODY_ELSE),
            Ok(()),
            "names ignore case"
        );
        assert_eq!(
            check(&edit, Some(&bob), "eve", ANYONE),
            Err(Refusal::NotYours),
            "a moderator cannot put words in a member's mouth"
        );
        assert_eq!(check(&delete, Some(&bob), "bob", NOBODY_ELSE), Ok(()));
        assert_eq!(check(&delete, Some(&bob), "eve", ANYONE), Ok(()));
        assert_eq!(
            check(&delete, Some(&bob), "eve", NOBODY_ELSE),
            Err(Refusal::NotYours)
        );
        let only_bob = |author: &str| author == "bob";
        assert_eq!(check(&delete, Some(&bob), "eve", &only_bob), Ok(()));
        assert_eq!(
            check(&delete, Some(&target("carol", false)), "eve", &only_bob),
            Err(Refusal::NotYours),
            "asked about the message's author"
        );
    }

    #[test]
    fn unknown_and_deleted_messages_are_refused_for_every_change() {
        let emoji = Emoji::parse("👍").unwrap();
        let gone = target("bob", true);
        for change in [
            Change::Edit {
                id: 1,
                content: "x",
            },
            Change::Delete { id: 1 },
            Change::React {
                id: 1,
                emoji: &emoji,
                add: true,
            },
        ] {
            assert_eq!(check(&change, None, "bob", ANYONE), Err(Refusal::UnknownId));
            assert_eq!(
                check(&change, Some(&gone), "bob", ANYONE),
                Err(Refusal::AlreadyDeleted)
            );
        }
    }

    #[test]
    fn reactions_are_sets_per_emoji_in_the_order_made() {
        let mut r = Reactions::new();
        assert_eq!(react(&mut r, "👍", "ann", true), Ok(true));
        assert_eq!(react(&mut r, "👍", "bob", true), Ok(true));
        assert_eq!(
            react(&mut r, "👍", "ann", true),
            Ok(false),
            "twice: no change"
        );
        assert_eq!(r["👍"], vec!["ann", "bob"]);
        assert_eq!(react(&mut r, "🎉", "ann", false), Ok(false), "never made");
        assert_eq!(react(&mut r, "👍", "ann", false), Ok(true));
        assert_eq!(react(&mut r, "👍", "bob", false), Ok(true));
        assert!(r.is_empty(), "the last one taken back removes the emoji");
    }

    #[test]
    fn at_most_twenty_distinct_emoji_but_more_people_on_one() {
        let mut r = Reactions::new();
        let emoji: Vec<String> = (0..MAX_REACTIONS)
            .map(|i| char::from_u32(0x1F600 + i as u32).unwrap().to_string())
            .collect();
        for e in &emoji {
            assert_eq!(react(&mut r, e, "ann", true), Ok(true));
        }
        assert_eq!(
            react(&mut r, "🦀", "ann", true),
            Err(Refusal::TooManyReactions)
        );
        assert_eq!(react(&mut r, &emoji[0], "bob", true), Ok(true));
        assert_eq!(r.len(), MAX_REACTIONS);
    }
}
