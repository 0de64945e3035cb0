//! Presence: who is online in a room (the `presence` frame on connect, `join`/`leave`, batched
//! `presence_changes`, `GET /rooms/{room}/members`), across tabs, abrupt disconnects, quiet
//! spells and big rooms.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

fn names_in(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|u| {
            u.as_str()
                .unwrap_or_else(|| panic!("not a name: {u}"))
                .to_string()
        })
        .collect()
}

/// `names`, sorted: how presence lists users.
fn sorted(names: &[&String]) -> Value {
    json!(names.iter().collect::<BTreeSet<_>>())
}

/// The users `GET /rooms/{room}/members` lists.
async fn members(c: &Client, room: &str, token: &str) -> Value {
    c.get_ok(&format!("/rooms/{room}/members"), token).await["users"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_the_users_online() {
    let c = client();
    let (room, [(alice, ta), (bob, tb)]) = c.room_with_users("members", ["alice", "bob"]).await;
    let path = format!("/rooms/{room}/members");
    assert_eq!(
        c.get_ok(&path, &ta).await,
        json!({"room_id": room, "users": []})
    );
    let mut a = c.ws(&room, &ta).await;
    let b = c.ws_ready(&room, &tb).await;
    assert_eq!(
        c.get_ok(&path, &ta).await,
        json!({"room_id": room, "users": sorted(&[&alice, &bob])})
    );
    b.close().await;
    a.next_leave_of(&bob).await;
    assert_eq!(
        c.get_ok(&path, &tb).await,
        json!({"room_id": room, "users": [alice]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_of_one_user_are_one_presence_one_join_and_no_leave_until_both_close() {
    let c = client();
    let (room, [(_, ta), (bob, tb)]) = c.room_with_users("tabs", ["watcher", "tabby"]).await;
    let mut a = c.ws_ready(&room, &ta).await;

    let mut tab1 = c.ws(&room, &tb).await;
    tab1.history_and_presence().await;
    assert_eq!(a.next_of_type("join").await["username"], bob.as_str());

    let mut tab2 = c.ws(&room, &tb).await;
    let (_, p) = tab2.history_and_presence().await;
    assert_eq!(
        names_in(&p["users"]).iter().filter(|u| **u == bob).count(),
        1,
        "one presence entry for two tabs: {p}"
    );
    a.expect_none_of_types(&["join"], QUIET).await;
    let online = members(&c, &room, &ta).await;
    assert_eq!(online.as_array().unwrap().len(), 2, "members: {online}");

    tab1.close().await;
    a.expect_none_of_types(&["leave"], QUIET * 2).await;
    tab2.roundtrip_ping().await; // the other tab is unaffected
    tab2.close().await;
    let leave = a.next_of_type("leave").await;
    assert_eq!(leave["username"], bob.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_disconnect_also_sends_leave() {
    let c = client();
    let (room, [(_, ta, mut a), (bob, _, b)]) =
        c.room_with_members("abrupt", ["stayer", "dropper"]).await;
    assert_eq!(a.next_of_type("join").await["username"], bob.as_str());
    drop(b); // TCP closed without a close frame
    a.next_leave_of(&bob).await;
    let online = members(&c, &room, &ta).await;
    assert_eq!(online.as_array().unwrap().len(), 1, "{online}");
}

/// After a quiet spell (long enough for the runtime to hibernate the room object), the room
/// still knows who is online and which id comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_works_the_same_after_a_quiet_spell() {
    let c = client();
    let (room, [(alice, ta), (bob, tb), (carol, tc)]) =
        c.room_with_users("quiet", ["alice", "bob", "carol"]).await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    let first = a.send_n(&room, "before", 2).await;
    b.roundtrip_ping().await;
    b.drain(&["message"], QUIET).await;
    a.drain(&["join"], Duration::from_millis(100)).await;

    tokio::time::sleep(Duration::from_secs(15)).await;

    b.send_message(&room, "after the quiet").await;
    let m = a.next_message().await;
    assert_eq!(m["content"], "after the quiet");
    assert_eq!(m["username"], bob.as_str());
    assert_eq!(m["id"], first[1] + 1, "the next id after a quiet spell");
    let mut c3 = c.ws(&room, &tc).await;
    let (h, p) = c3.history_and_presence().await;
    assert_eq!(ids(&h["messages"]), vec![first[0], first[1], first[1] + 1]);
    assert_eq!(
        p["users"],
        sorted(&[&alice, &bob, &carol]),
        "presence rebuilt after the quiet spell"
    );
    assert_eq!(a.next_of_type("join").await["username"], carol.as_str());
    b.close().await;
    a.next_leave_of(&bob).await;
    c3.next_leave_of(&bob).await;
    c3.expect_none_of_types(&["leave", "presence_changes"], QUIET)
        .await;
    assert_eq!(members(&c, &room, &ta).await, sorted(&[&alice, &carol]));
}

/// Past `PRESENCE_BROADCAST_MAX` open sockets a room stops announcing each join (the frames
/// would grow with the square of the room), while the presence frame still lists everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_rooms_stop_announcing_joins_but_presence_still_lists_everyone() {
    let server = start(ServerOptions::relaxed_limits().var("PRESENCE_BROADCAST_MAX", "2")).await;
    let c = server.client();
    let (room, [(_, ta), (bob, tb), (carol, tc)]) =
        c.room_with_users("big", ["first", "second", "third"]).await;
    let mut a = c.ws(&room, &ta).await;
    a.history_and_presence().await;
    let mut b = c.ws(&room, &tb).await;
    b.history_and_presence().await;
    assert_eq!(
        a.next_of_type("join").await["username"],
        bob.as_str(),
        "below the threshold"
    );
    let mut third = c.ws(&room, &tc).await;
    let (_, presence) = third.history_and_presence().await;
    assert_eq!(presence["users"].as_array().unwrap().len(), 3, "{presence}");
    a.expect_none_of_types(&["join", "presence_changes"], QUIET)
        .await;
    b.expect_none_of_types(&["join", "presence_changes"], QUIET)
        .await;
    // Messages still reach everyone.
    third.send_message(&room, "still here").await;
    assert_eq!(a.next_message().await["username"], carol.as_str());
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Presence batching (PRESENCE_BATCH_MS)
// ---------------------------------------------------------------------------------------------

/// The batching window of the batching tests' server: long enough that a burst of connects or
/// closes falls within one window even on a busy machine, so the tests do not race the clock.
/// (The shared server runs the default, 100 ms.)
const BATCH_MS: u64 = 3000;

/// How long a batching test waits for presence to converge: a window plus the usual margin.
const BATCH_WAIT: Duration = Duration::from_millis(BATCH_MS + 10_000);

static BATCH: LazyServer = LazyServer::new(|| {
    ServerOptions::relaxed_limits().var("PRESENCE_BATCH_MS", &BATCH_MS.to_string())
});

/// Who a socket believes is online, kept as the browser client does: the `presence` frame on
/// connect, then `join`/`leave` and `presence_changes` applied as set additions and removals.
/// Also logs every announced name, to check that nobody is missed or wrongly announced.
struct PresenceView {
    online: BTreeSet<String>,
    /// Names announced as joined / left, from single frames and batches alike.
    joined: Vec<String>,
    left: Vec<String>,
    /// The type of each presence announcement, in arrival order.
    frames: Vec<String>,
}

impl PresenceView {
    fn new(presence: &Value) -> Self {
        assert_eq!(presence["type"], "presence", "{presence}");
        PresenceView {
            online: names_in(&presence["users"]).into_iter().collect(),
            joined: Vec::new(),
            left: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Forgets what was announced so far (keeps who is online).
    fn clear_log(&mut self) {
        self.joined.clear();
        self.left.clear();
        self.frames.clear();
    }

    fn batches(&self) -> usize {
        self.frames
            .iter()
            .filter(|t| *t == "presence_changes")
            .count()
    }

    fn apply(&mut self, v: &Value) {
        let (joined, left) = match v["type"].as_str() {
            Some("join") => (vec![v["username"].as_str().unwrap().to_string()], vec![]),
            Some("leave") => (vec![], vec![v["username"].as_str().unwrap().to_string()]),
            Some("presence_changes") => {
                let (joined, left) = (names_in(&v["joined"]), names_in(&v["left"]));
                assert!(
                    joined.iter().all(|j| !left.contains(j)),
                    "a name in both lists: {v}"
                );
                (joined, left)
            }
            _ => return,
        };
        self.frames.push(v["type"].as_str().unwrap().to_string());
        for name in joined {
            self.online.insert(name.clone());
            self.joined.push(name);
        }
        for name in left {
            self.online.remove(&name);
            self.left.push(name);
        }
    }

    /// Reads presence announcements from `ws` until `done` holds; fails after `wait`.
    async fn read_until(
        &mut self,
        ws: &mut WsClient,
        wait: Duration,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match ws
                .try_next_of_types(&["join", "leave", "presence_changes"], left)
                .await
            {
                Ok(v) => self.apply(&v),
                Err(why) => panic!(
                    "presence never converged ({why}): online {:?}, announced joined {:?} left {:?}; seen: {}",
                    self.online,
                    self.joined,
                    self.left,
                    ws.seen_summary()
                ),
            }
        }
    }
}

/// What a member who watched a burst of joins or leaves (`kind`) in a quiet room must have seen:
/// the first announced at once, as in a quiet room, the rest batched, every name once, nothing
/// else.
fn assert_burst_announced(view: &PresenceView, kind: &str, names: &BTreeSet<String>) {
    let (announced, opposite) = match kind {
        "join" => (&view.joined, &view.left),
        _ => (&view.left, &view.joined),
    };
    assert_eq!(
        view.frames.first().map(String::as_str),
        Some(kind),
        "the room was quiet: the first {kind} goes out at once: {:?}",
        view.frames
    );
    assert!(
        view.batches() >= 1,
        "a burst within one window gives a presence_changes frame: {:?}",
        view.frames
    );
    assert_eq!(
        &announced.iter().cloned().collect::<BTreeSet<_>>(),
        names,
        "every {kind} announced, nobody else"
    );
    assert!(opposite.is_empty(), "only {kind}s: {opposite:?}");
}

/// The shared start of the batching tests: a room with one early member watching (`view`, kept
/// from its presence frame on) as a burst of new users all connect at once (`sockets`), read
/// until the watcher sees all of them online.
struct BurstRoom {
    c: Client,
    room: String,
    early: String,
    early_token: String,
    /// The burst's usernames.
    names: BTreeSet<String>,
    /// The burst's names and the early member's.
    everyone: BTreeSet<String>,
    /// The burst's sockets, the frames after their upgrade not read yet.
    sockets: Vec<WsClient>,
    watcher: WsClient,
    view: PresenceView,
}

impl BurstRoom {
    async fn connect(room_prefix: &str, early_prefix: &str, burst_prefix: &str) -> BurstRoom {
        let c = BATCH.client();
        let (room, [(early, early_token)]) = c.room_with_users(room_prefix, [early_prefix]).await;
        let (names, burst_tokens): (BTreeSet<String>, Vec<String>) =
            c.new_users(burst_prefix, 6).await.into_iter().unzip();
        let mut watcher = c.ws(&room, &early_token).await;
        let (_, p) = watcher.history_and_presence().await;
        let mut view = PresenceView::new(&p);
        let n = burst_tokens.len();
        let sockets = c.ws_all(&room, burst_tokens, n).await;
        let mut everyone = names.clone();
        everyone.insert(early.clone());
        view.read_until(&mut watcher, BATCH_WAIT, |v| v.online == everyone)
            .await;
        BurstRoom {
            c,
            room,
            early,
            early_token,
            names,
            everyone,
            sockets,
            watcher,
            view,
        }
    }

    /// Who `GET /rooms/{room}/members` lists.
    async fn members(&self) -> Value {
        members(&self.c, &self.room, &self.early_token).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_is_batched_and_everyone_learns_every_join() {
    let mut burst = BurstRoom::connect("burstjoin", "early", "joiner").await;
    assert_burst_announced(&burst.view, "join", &burst.names);

    // Every joiner, from its own presence frame on, converges on the same set, and is never
    // told that anyone (itself included) left.
    let everyone = &burst.everyone;
    for ws in burst.sockets.iter_mut() {
        let (_, p) = ws.history_and_presence().await;
        let mut own = PresenceView::new(&p);
        own.read_until(ws, BATCH_WAIT, |v| &v.online == everyone)
            .await;
        assert!(own.left.is_empty(), "{:?}", own.left);
    }
    let online = names_in(&burst.members().await);
    assert_eq!(&online.into_iter().collect::<BTreeSet<_>>(), everyone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_leaves_is_batched_and_everyone_learns_every_leave() {
    let mut burst = BurstRoom::connect("burstleave", "stayer", "leaver").await;
    // A whole window without announcements: the room is quiet again.
    tokio::time::sleep(Duration::from_millis(BATCH_MS + 500)).await;
    burst.view.clear_log();

    let sockets = std::mem::take(&mut burst.sockets);
    futures_util::future::join_all(sockets.into_iter().map(|ws| ws.close())).await;
    let only_early = BTreeSet::from([burst.early.clone()]);
    burst
        .view
        .read_until(&mut burst.watcher, BATCH_WAIT, |v| v.online == only_early)
        .await;
    assert_burst_announced(&burst.view, "leave", &burst.names);
    assert_eq!(burst.members().await, json!([burst.early]));
}

/// A user who comes and goes within one batch, with nobody connecting in between, nets out:
/// the others are never told about them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_leave_within_one_batch_cancel_out() {
    let c = BATCH.client();
    let (room, [(early, te), (y, ty), (x, tx), (z, tz)]) = c
        .room_with_users("netout", ["early", "opener", "fleeting", "later"])
        .await;

    let mut a = c.ws(&room, &te).await;
    let (_, p) = a.history_and_presence().await;
    let mut view = PresenceView::new(&p);
    let _y = c.ws(&room, &ty).await;
    // y's join goes out at once and opens a window: what follows is batched.
    view.read_until(&mut a, BATCH_WAIT, |v| v.online.contains(&y))
        .await;

    let mut xs = c.ws(&room, &tx).await;
    xs.history_and_presence().await;
    xs.close().await;
    // x's close has been handled before anyone else connects.
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    while names_in(&members(&c, &room, &te).await).contains(&x) {
        assert!(tokio::time::Instant::now() < deadline, "x never went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut zs = c.ws(&room, &tz).await;
    let (_, zp) = zs.history_and_presence().await;
    assert!(!names_in(&zp["users"]).contains(&x), "{zp}");

    view.read_until(&mut a, BATCH_WAIT, |v| v.online.contains(&z))
        .await;
    let expected = BTreeSet::from([early.clone(), y.clone(), z.clone()]);
    assert_eq!(view.online, expected);
    assert!(
        !view.joined.contains(&x) && !view.left.contains(&x),
        "x came and went within one batch: {}",
        a.seen_summary()
    );
    a.expect_none_of_types(&["join", "leave", "presence_changes"], QUIET)
        .await;
}
