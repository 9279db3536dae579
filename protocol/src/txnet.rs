//! Two-phase commit over the sync protocol (`Message::Tx`, PROTOCOL.md).
//!
//! A session hands the transaction messages it receives to its [`TxEndpoint`] and sends
//! what comes back; once established, it also sends what the endpoint posts to its peer
//! later (a participant's questions while in doubt, a coordinator's prepares and
//! decisions). Two endpoints: [`ParticipantEndpoint`], a replica's part (a hub's, on its
//! writer thread), and [`CoordinatorEndpoint`], a coordinator's, which connects to the
//! participants it needs and runs transactions for callers ([`CoordinatorEndpoint::run`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use kuzu_sync_engine::event::Op;
use kuzu_sync_engine::ports::{EventStore, GraphStore};
use kuzu_sync_engine::sync::{Lifecycle, Session, SessionConfig, CAP_NO_EXCHANGE};
use kuzu_sync_engine::tx::{
    from_wire, to_wire, CoordRecord, Decision, Outbox, PartRecord, Reason, TxCoordinator, TxId,
    TxLog, TxMsg, TxParticipant, Vote, WireMsg, RETRY_MS,
};
use kuzu_sync_engine::{MemoryEventStore, PeerId, Replica};

use crate::net::{DriveOptions, EventSink, Shared};

/// Milliseconds since the Unix epoch: the clock of deadlines.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a session does with transaction messages.
pub trait TxEndpoint: Send + Sync + std::fmt::Debug {
    /// A message from `from` (the session's authenticated peer); returns what to send back
    /// to `from` on the same session.
    fn handle(
        &self,
        from: String,
        msg: WireMsg,
    ) -> Pin<Box<dyn Future<Output = Vec<WireMsg>> + Send + '_>>;
    /// The session with `peer` is established: what the endpoint posts to `peer` later
    /// arrives on this receiver, for the session to send.
    fn attach(&self, peer: &str) -> mpsc::UnboundedReceiver<WireMsg>;
    /// Called by a hub once it runs (inside its tokio runtime): start what runs in the
    /// background until `cancel`. Idempotent.
    fn start(&self, cancel: tokio_util::sync::CancellationToken) {
        let _ = cancel;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on `weak`'s target every [`RETRY_MS`] until `cancel`, or until it is gone.
fn every_retry<T, F, Fut>(
    weak: std::sync::Weak<T>,
    cancel: tokio_util::sync::CancellationToken,
    f: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(RETRY_MS)) => {}
                _ = cancel.cancelled() => return,
            }
            let Some(me) = weak.upgrade() else { return };
            f(me).await;
        }
    });
}

/// The sessions by peer, for messages posted to a peer outside any exchange.
#[derive(Default)]
struct Sessions(Mutex<HashMap<String, mpsc::UnboundedSender<WireMsg>>>);

impl Sessions {
    fn attach(&self, peer: &str) -> mpsc::UnboundedReceiver<WireMsg> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.0).insert(peer.to_owned(), tx);
        rx
    }
    /// Posts to `to`'s session; false if there is none open.
    fn post(&self, to: &str, msg: WireMsg) -> bool {
        let mut map = lock(&self.0);
        match map.get(to) {
            Some(s) if s.send(msg).is_ok() => true,
            Some(_) => {
                map.remove(to);
                false
            }
            None => false,
        }
    }
}

/// Who dials whom for transaction messages.
struct TxLink<'a> {
    /// The dialer's peer id, as the handshake gives it.
    me: PeerId,
    /// The peer expected behind `url`: another is a protocol error.
    peer: &'a str,
    url: &'a str,
    token: Option<String>,
}

/// One `no-exchange` client session to `link.url` that carries transaction messages to
/// and from `endpoint` until it ends or `cancel`: no events flow (an empty in-memory
/// replica under the dialer's name speaks the handshake). A coordinator's links to its
/// participants, and a participant's to the others while in doubt.
async fn tx_link(
    link: TxLink<'_>,
    endpoint: Arc<dyn TxEndpoint>,
    events: EventSink,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let mut conn = crate::net::connect(link.url, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let replica = Replica::create(
        MemoryEventStore::default(),
        kuzu_sync_engine::memory::MemoryGraphStore::new(),
        link.me,
        Box::new(kuzu_sync_engine::FixedClock(0)),
    )
    .map_err(|e| e.to_string())?;
    let shared = Shared::new(replica);
    let session = Session::client(SessionConfig {
        auth_token: link.token,
        capabilities: vec![CAP_NO_EXCHANGE.to_string()],
        ..SessionConfig::default()
    });
    let opts = DriveOptions {
        cancel,
        events,
        tx: Some(endpoint),
        tx_expect_peer: Some(link.peer.to_owned()),
        ..DriveOptions::default()
    };
    crate::net::drive(&mut *conn, session, &shared, &opts)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The participant's records, boxed (SQLite in the CLI, memory in tests).
pub type BoxedPartLog = Box<dyn TxLog<PartRecord<Op>> + Send>;

/// A replica's part in transactions, for its sessions.
pub struct ParticipantEndpoint<E: EventStore, G: GraphStore> {
    shared: Arc<Shared<E, G>>,
    part: Arc<Mutex<TxParticipant<BoxedPartLog>>>,
    sessions: Sessions,
    events: EventSink,
    me: std::sync::Weak<Self>,
    ticking: std::sync::atomic::AtomicBool,
    /// The token presented when dialing another participant to ask it about a
    /// transaction in doubt (`--tx-auth-token-file`).
    ask_token: Option<String>,
    /// Links dialed to other participants while a transaction naming them is in doubt:
    /// peer → (URL, what ends the link).
    dialed: Mutex<HashMap<String, (String, tokio_util::sync::CancellationToken)>>,
    /// The hub's cancellation, once started: dialed links end with it.
    cancel: std::sync::OnceLock<tokio_util::sync::CancellationToken>,
}

impl<E: EventStore, G: GraphStore> std::fmt::Debug for ParticipantEndpoint<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantEndpoint")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CoordinatorEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorEndpoint")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<E, G> ParticipantEndpoint<E, G>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    /// The replica's participant, recovered from `log`. Once its hub runs (see
    /// [`TxEndpoint::start`]), a task asks about transactions in doubt every
    /// [`RETRY_MS`], dialing the other participants it has no session with (presenting
    /// `ask_token`) once the coordinator has not answered.
    pub fn new(
        shared: Arc<Shared<E, G>>,
        log: BoxedPartLog,
        events: EventSink,
        ask_token: Option<String>,
    ) -> Result<Arc<Self>, kuzu_sync_engine::ReplicaError> {
        let part = TxParticipant::open(&shared.lock(), log, now_ms())?;
        Ok(Arc::new_cyclic(|me| ParticipantEndpoint {
            shared,
            part: Arc::new(Mutex::new(part)),
            sessions: Sessions::default(),
            events,
            me: me.clone(),
            ticking: std::sync::atomic::AtomicBool::new(false),
            ask_token,
            dialed: Mutex::new(HashMap::new()),
            cancel: std::sync::OnceLock::new(),
        }))
    }

    /// The participant (for `tx-status` and tests).
    pub fn participant(&self) -> MutexGuard<'_, TxParticipant<BoxedPartLog>> {
        lock(&self.part)
    }

    async fn tick(&self) {
        let part = self.part.clone();
        let out = self
            .shared
            .run(move |r| lock(&part).tick(r, now_ms()))
            .await;
        let out = match out {
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                self.report(&format!("transactions in doubt: {e}"));
                return;
            }
            None => return,
        };
        // A commit by evidence wrote events: every session streams them.
        if out.iter().any(|(_, m)| matches!(m, TxMsg::Ack { .. })) {
            self.shared.changed();
        }
        let addresses = lock(&self.part).participant().addresses();
        for (to, msg) in out {
            if !self.sessions.post(&to, to_wire(msg)) {
                if let Some(url) = addresses.get(&to) {
                    self.dial(&to, url);
                }
            }
        }
        // Links to peers no transaction in doubt names any more end.
        lock(&self.dialed).retain(|peer, (_, stop)| {
            let keep = addresses.contains_key(peer);
            if !keep {
                stop.cancel();
            }
            keep
        });
    }

    fn report(&self, reason: &str) {
        (self.events)(
            "tx",
            &Lifecycle::Error {
                reason: reason.to_owned(),
            },
        );
    }

    /// Keeps a link to another participant, `peer` at `url`, reconnecting with backoff,
    /// until no transaction in doubt here names it (see `tick`) or the hub stops. The
    /// questions go over it at the next tick.
    fn dial(&self, peer: &str, url: &str) {
        let Some(hub) = self.cancel.get() else { return };
        let stop = hub.child_token();
        {
            let mut dialed = lock(&self.dialed);
            if dialed.get(peer).is_some_and(|(u, _)| u == url) {
                return;
            }
            if let Some((_, old)) = dialed.insert(peer.to_owned(), (url.to_owned(), stop.clone())) {
                old.cancel();
            }
        }
        let Some(me) = self.me.upgrade() else { return };
        let peer = peer.to_owned();
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut backoff = crate::net::Backoff::default();
            while !stop.is_cancelled() {
                match me.ask_session(&peer, &url, &stop).await {
                    Ok(()) => backoff.reset(),
                    Err(e) => me.report(&format!("link to participant {peer} ({url}): {e}")),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }

    /// One session with another participant, carrying the questions and their answers
    /// (see [`tx_link`]).
    async fn ask_session(
        self: &Arc<Self>,
        peer: &str,
        url: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let me = self.shared.lock().peer().clone();
        let link = TxLink {
            me,
            peer,
            url,
            token: self.ask_token.clone(),
        };
        tx_link(link, self.clone(), self.events.clone(), stop.child_token()).await
    }

    /// Handles a message on the writer thread. A commit's acknowledgement leaves as soon
    /// as the commit is durable in the event log (ARCHITECTURE.md, "Acknowledging a
    /// commit once it is durable"): the session answers with it then, and the rest of
    /// the job (the graph's apply, COMMITTED) finishes in the background, its messages
    /// posted to the sessions.
    async fn on_message(&self, from: String, msg: WireMsg) -> Vec<WireMsg> {
        let part = self.part.clone();
        let who = from.clone();
        let (early_tx, mut early_rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let mut job = tokio::spawn(async move {
            shared
                .run(move |r| {
                    let now = now_ms();
                    let tx = msg.tx().clone();
                    let mut p = lock(&part);
                    let mut early = |to: String, m: TxMsg<Op>| {
                        let _ = early_tx.send((to, m));
                    };
                    match from_wire(msg, r.engine().schema()) {
                        Ok(m) => p.handle_with(r, &who, m, now, Some(&mut early)),
                        Err(e) => p.refuse(r, &who, tx, Reason::Invalid, e, now),
                    }
                })
                .await
        });
        let done = tokio::select! {
            biased;
            Some(first) = early_rx.recv() => {
                let mut now = vec![first];
                now.extend(std::iter::from_fn(|| early_rx.try_recv().ok()));
                if let Some(me) = self.me.upgrade() {
                    let from = from.clone();
                    tokio::spawn(async move {
                        let rest = me.finished(&from, job.await.ok().flatten());
                        me.route(&from, rest, false);
                    });
                }
                return self.route(&from, now, true);
            }
            done = &mut job => done.ok().flatten(),
        };
        let mut out: Vec<_> = std::iter::from_fn(|| early_rx.try_recv().ok()).collect();
        out.extend(self.finished(&from, done));
        self.route(&from, out, true)
    }

    /// What a job on the writer thread left to send; its failure is reported.
    fn finished(
        &self,
        from: &str,
        done: Option<Result<Outbox, kuzu_sync_engine::ReplicaError>>,
    ) -> Outbox {
        match done {
            Some(Ok(out)) => {
                // A commit wrote events: every session streams them.
                self.shared.changed();
                out
            }
            Some(Err(e)) => {
                // The replica was rebuilt from its stores, which may hold new events.
                self.shared.changed();
                self.report(&format!("transaction message from {from}: {e}"));
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Posts `out` to the sessions; with `answering`, what goes to `from` is returned
    /// instead, for `from`'s session to send as its answer.
    fn route(&self, from: &str, out: Outbox, answering: bool) -> Vec<WireMsg> {
        let mut back = Vec::new();
        for (to, msg) in out {
            if answering && to == from {
                back.push(to_wire(msg));
            } else {
                self.sessions.post(&to, to_wire(msg));
            }
        }
        back
    }
}

impl<E, G> TxEndpoint for ParticipantEndpoint<E, G>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    fn handle(
        &self,
        from: String,
        msg: WireMsg,
    ) -> Pin<Box<dyn Future<Output = Vec<WireMsg>> + Send + '_>> {
        Box::pin(self.on_message(from, msg))
    }
    fn attach(&self, peer: &str) -> mpsc::UnboundedReceiver<WireMsg> {
        self.sessions.attach(peer)
    }
    fn start(&self, cancel: tokio_util::sync::CancellationToken) {
        if self.ticking.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = self.cancel.set(cancel.clone());
        every_retry(self.me.clone(), cancel, |me| async move { me.tick().await });
    }
}

/// The coordinator's records, boxed.
pub type BoxedCoordLog = Box<dyn TxLog<CoordRecord> + Send>;

/// Where a participant is and how to get in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One participant's part of a transaction a caller asks for.
#[derive(Debug, Clone)]
pub struct Part {
    pub peer: String,
    pub address: Address,
    /// JSON op lines, as `kuzu-sync write` reads them.
    pub ops: Vec<String>,
}

/// How a transaction ended, as `kuzu-sync tx` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxOutcome {
    pub tx: String,
    /// `commit` or `abort`.
    pub decision: String,
    /// Per participant: `committed`, `rolled_back`, or `pending` (the decision is logged
    /// and will reach it: it had not acknowledged before the caller stopped waiting).
    pub participants: BTreeMap<String, String>,
    /// Why, for an abort: the first vote against, or the deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
struct Watch {
    votes_no: Vec<(String, String)>,
    acked: BTreeSet<String>,
}

/// A coordinator: its log, its links to participants, the transactions it runs.
pub struct CoordinatorEndpoint {
    name: String,
    coord: Mutex<TxCoordinator<BoxedCoordLog>>,
    sessions: Sessions,
    /// Participants it has links to (or is connecting to).
    linked: Mutex<HashMap<String, Address>>,
    /// What each running transaction has heard, for its caller.
    watching: Mutex<HashMap<TxId, Watch>>,
    /// Bumped at every message handled, for callers waiting on one.
    progress: watch::Sender<u64>,
    events: EventSink,
    cancel: tokio_util::sync::CancellationToken,
    me: std::sync::Weak<CoordinatorEndpoint>,
}

impl CoordinatorEndpoint {
    /// A coordinator named `name` recovered from `log`, with a task that ticks it every
    /// [`RETRY_MS`] until `cancel`. `addresses` are the participants it knows how to
    /// reach (from earlier transactions), so that commits logged before a restart reach
    /// them.
    pub fn start(
        name: &str,
        log: BoxedCoordLog,
        addresses: BTreeMap<String, Address>,
        events: EventSink,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, kuzu_sync_engine::StoreError> {
        PeerId::new(name).map_err(|e| kuzu_sync_engine::StoreError::Corrupt(e.to_string()))?;
        let (coord, resend) = TxCoordinator::open(name, log, now_ms())?;
        let me = Arc::new_cyclic(|me| CoordinatorEndpoint {
            name: name.to_owned(),
            coord: Mutex::new(coord),
            sessions: Sessions::default(),
            linked: Mutex::new(HashMap::new()),
            watching: Mutex::new(HashMap::new()),
            progress: watch::Sender::new(0),
            events,
            cancel: cancel.clone(),
            me: me.clone(),
        });
        for (peer, address) in addresses {
            me.link(&peer, &address);
        }
        for (to, msg) in resend {
            me.sessions.post(&to, to_wire(msg));
        }
        every_retry(Arc::downgrade(&me), cancel, |me| async move {
            let out = lock(&me.coord).tick(now_ms());
            match out {
                Ok(out) => me.route(out),
                Err(e) => me.report(&format!("coordinator log: {e}")),
            }
        });
        Ok(me)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This start's epoch (one more than the last start's).
    pub fn epoch(&self) -> u64 {
        lock(&self.coord).coordinator().epoch()
    }

    /// The participants it keeps links to, and where they are.
    pub fn addresses(&self) -> BTreeMap<String, Address> {
        lock(&self.linked)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn report(&self, reason: &str) {
        (self.events)(
            "coordinator",
            &Lifecycle::Error {
                reason: reason.to_owned(),
            },
        );
    }

    fn route(&self, out: Vec<(String, TxMsg<Op>)>) {
        for (to, msg) in out {
            // A participant without an open link gets it when its link is back: the
            // coordinator sends commits again, and participants in doubt ask.
            self.sessions.post(&to, to_wire(msg));
        }
    }

    /// Keeps a link to `peer` at `address` open, reconnecting with backoff, until the
    /// coordinator stops. A second call with a new address takes over.
    fn link(&self, peer: &str, address: &Address) {
        {
            let mut linked = lock(&self.linked);
            if linked.get(peer) == Some(address) {
                return;
            }
            linked.insert(peer.to_owned(), address.clone());
        }
        let Some(me) = self.me.upgrade() else { return };
        let peer = peer.to_owned();
        let address = address.clone();
        tokio::spawn(async move {
            let mut backoff = crate::net::Backoff::default();
            loop {
                if me.cancel.is_cancelled() || lock(&me.linked).get(&peer) != Some(&address) {
                    return;
                }
                match me.session(&peer, &address).await {
                    Ok(()) => backoff.reset(),
                    Err(e) => me.report(&format!("link to {peer} ({}): {e}", address.url)),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = me.cancel.cancelled() => return,
                }
            }
        });
    }

    /// One session with a participant (see [`tx_link`]).
    async fn session(self: &Arc<Self>, peer: &str, address: &Address) -> Result<(), String> {
        let link = TxLink {
            me: PeerId::new(self.name.as_str()).map_err(|e| e.to_string())?,
            peer,
            url: &address.url,
            token: address.token.clone(),
        };
        tx_link(
            link,
            self.clone(),
            self.events.clone(),
            self.cancel.child_token(),
        )
        .await
    }

    /// Runs one transaction: links to each participant, prepares, decides, and waits up
    /// to `wait` for the acknowledgements. Votes are due within `vote_timeout`.
    pub async fn run(
        &self,
        parts: Vec<Part>,
        vote_timeout: Duration,
        wait: Duration,
    ) -> Result<TxOutcome, String> {
        if parts.is_empty() {
            return Err("a transaction needs at least one participant".into());
        }
        let mut seen = BTreeSet::new();
        for p in &parts {
            PeerId::new(p.peer.as_str()).map_err(|e| format!("participant: {e}"))?;
            if !seen.insert(p.peer.clone()) {
                return Err(format!("participant {} named twice", p.peer));
            }
            if p.ops.is_empty() {
                return Err(format!("participant {} has no ops", p.peer));
            }
        }
        for p in parts.iter().filter(|p| !p.address.url.is_empty()) {
            self.link(&p.peer, &p.address);
        }
        let mut progress = self.progress.subscribe();
        // The links come up (a prepare to a participant without one would be lost until
        // the coordinator gave up at the deadline).
        let up_by = tokio::time::Instant::now() + vote_timeout;
        while !parts
            .iter()
            .all(|p| lock(&self.sessions.0).contains_key(&p.peer))
        {
            if tokio::time::Instant::now() >= up_by {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), progress.changed()).await;
        }
        let deadline = now_ms() + vote_timeout.as_millis() as u64;
        let work = parts
            .iter()
            .map(|p| (p.peer.clone(), p.ops.clone()))
            .collect();
        let (tx, prepares) = {
            let mut c = lock(&self.coord);
            c.begin(work, deadline).map_err(|e| e.to_string())?
        };
        lock(&self.watching).insert(tx.clone(), Watch::default());
        // Each prepare says where the participants with a URL are, so that one in doubt
        // can ask the others if this coordinator is gone (never their tokens).
        let addresses: BTreeMap<String, String> = parts
            .iter()
            .filter(|p| !p.address.url.is_empty())
            .map(|p| (p.peer.clone(), p.address.url.clone()))
            .collect();
        for (to, mut msg) in prepares {
            if let TxMsg::Prepare { addresses: a, .. } = &mut msg {
                a.clone_from(&addresses);
            }
            self.sessions.post(&to, msg);
        }
        // The decision: all votes, a vote against, or the deadline (the ticker aborts).
        loop {
            if lock(&self.coord).coordinator().decision(&tx).is_some() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(RETRY_MS), progress.changed()).await;
        }
        let decision = lock(&self.coord)
            .coordinator()
            .decision(&tx)
            .expect("decided");
        let until = tokio::time::Instant::now() + wait;
        loop {
            let acked = lock(&self.watching)
                .get(&tx)
                .map(|w| w.acked.len())
                .unwrap_or(0);
            if acked == parts.len() || tokio::time::Instant::now() >= until {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), progress.changed()).await;
        }
        let w = lock(&self.watching).remove(&tx).unwrap_or_default();
        let done = match decision {
            Decision::Commit => "committed",
            Decision::Abort => "rolled_back",
        };
        let participants = parts
            .iter()
            .map(|p| {
                let state = if w.acked.contains(&p.peer) {
                    done
                } else {
                    "pending"
                };
                (p.peer.clone(), state.to_string())
            })
            .collect();
        let reason = match decision {
            Decision::Commit => None,
            Decision::Abort => Some(
                w.votes_no
                    .first()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .unwrap_or_else(|| "no vote from every participant by the deadline".into()),
            ),
        };
        Ok(TxOutcome {
            tx: tx.to_string(),
            decision: match decision {
                Decision::Commit => "commit",
                Decision::Abort => "abort",
            }
            .into(),
            participants,
            reason,
        })
    }

    fn on_message(&self, from: String, msg: WireMsg) -> Vec<WireMsg> {
        let tx = msg.tx().clone();
        if let Some(w) = lock(&self.watching).get_mut(&tx) {
            match &msg {
                TxMsg::Vote {
                    vote: Vote::No { reason, detail },
                    ..
                } => w
                    .votes_no
                    .push((from.clone(), format!("{reason}: {detail}"))),
                TxMsg::Ack { .. } => {
                    w.acked.insert(from.clone());
                    // The caller may return before the end record below is written: it
                    // only lets this coordinator forget the transaction.
                    self.progress.send_modify(|g| *g += 1);
                }
                _ => {}
            }
        }
        // Messages to a coordinator carry no ops: nothing to read against a schema.
        let msg = match from_wire(msg, &kuzu_sync_engine::Schema::default()) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        let result = lock(&self.coord).handle(&from, msg, now_ms());
        self.progress.send_modify(|g| *g += 1);
        let mut back = Vec::new();
        match result {
            Ok(out) => {
                for (to, m) in out {
                    if to == from {
                        back.push(to_wire(m));
                    } else {
                        self.sessions.post(&to, to_wire(m));
                    }
                }
            }
            Err(e) => self.report(&format!("coordinator log: {e}")),
        }
        back
    }
}

impl TxEndpoint for CoordinatorEndpoint {
    fn handle(
        &self,
        from: String,
        msg: WireMsg,
    ) -> Pin<Box<dyn Future<Output = Vec<WireMsg>> + Send + '_>> {
        let out = self.on_message(from, msg);
        Box::pin(async move { out })
    }
    fn attach(&self, peer: &str) -> mpsc::UnboundedReceiver<WireMsg> {
        let rx = self.sessions.attach(peer);
        self.progress.send_modify(|g| *g += 1);
        rx
    }
}

// ---------------------------------------------------------------------------------------
// The coordinator's HTTP face: `POST /tx` runs a transaction, `GET /status` describes it.
// ---------------------------------------------------------------------------------------

/// Largest transaction request body.
pub const MAX_TX_REQUEST: usize = 16 << 20;

/// A transaction request, as `kuzu-sync tx FILE.json` sends it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TxRequest {
    /// Per participant (its peer id): where it is, and its ops (objects in the format of
    /// `kuzu-sync write`).
    pub participants: BTreeMap<String, TxRequestPart>,
    /// Votes are due within this many milliseconds (default 5,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TxRequestPart {
    /// Where the coordinator dials it (a hub: `serve`). None: the participant connects to
    /// the coordinator itself (`sync --watch` with the coordinator's participants address
    /// among its remotes), and is reached on that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub ops: Vec<serde_json::Value>,
}

impl TxRequest {
    /// Reads a request, naming what is wrong with it.
    pub fn parse(body: &[u8]) -> Result<TxRequest, String> {
        let r: TxRequest =
            serde_json::from_slice(body).map_err(|e| format!("a bad transaction request: {e}"))?;
        if r.participants.is_empty() {
            return Err("a bad transaction request: no participants".into());
        }
        if r.participants.len() > kuzu_sync_engine::tx::MAX_PARTICIPANTS {
            return Err(format!(
                "a bad transaction request: {} participants, at most {}",
                r.participants.len(),
                kuzu_sync_engine::tx::MAX_PARTICIPANTS
            ));
        }
        for (peer, p) in &r.participants {
            if let Some(url) = &p.url {
                crate::link::parse_url(url).ok_or_else(|| {
                    format!("a bad transaction request: participant {peer}: bad url {url:?}")
                })?;
            }
            if p.ops.len() > kuzu_sync_engine::tx::MAX_TX_OPS {
                return Err(format!(
                    "a bad transaction request: participant {peer}: {} ops, at most {}",
                    p.ops.len(),
                    kuzu_sync_engine::tx::MAX_TX_OPS
                ));
            }
            if let Some(i) = p.ops.iter().position(|o| !o.is_object()) {
                return Err(format!(
                    "a bad transaction request: participant {peer}: op {} is not a JSON object",
                    i + 1
                ));
            }
        }
        Ok(r)
    }

    fn parts(&self) -> Vec<Part> {
        self.participants
            .iter()
            .map(|(peer, p)| Part {
                peer: peer.clone(),
                address: Address {
                    url: p.url.clone().unwrap_or_default(),
                    token: p.token.clone(),
                },
                ops: p.ops.iter().map(|o| o.to_string()).collect(),
            })
            .collect()
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn answer(status: hyper::StatusCode, body: serde_json::Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Body::new(body.to_string().into()))
        .expect("a valid response")
}

/// Serves the coordinator's HTTP face on `listener` until `cancel`: `POST /tx` with a
/// [`TxRequest`] runs it and answers its [`TxOutcome`]; `GET /status` answers the name,
/// epoch and known participants. With `token`, requests must carry
/// `Authorization: Bearer TOKEN`. `ran` is called after each transaction (to save the
/// participants' addresses).
pub async fn serve_coordinator(
    listener: tokio::net::TcpListener,
    endpoint: Arc<CoordinatorEndpoint>,
    token: Option<String>,
    ran: Arc<dyn Fn(&CoordinatorEndpoint) + Send + Sync>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let token = Arc::new(token);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = cancel.cancelled() => return Ok(()),
        };
        let (endpoint, token, ran) = (endpoint.clone(), token.clone(), ran.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (endpoint, token, ran) = (endpoint.clone(), token.clone(), ran.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(request(req, &endpoint, &token, &*ran).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn request(
    req: hyper::Request<hyper::body::Incoming>,
    endpoint: &CoordinatorEndpoint,
    token: &Option<String>,
    ran: &(dyn Fn(&CoordinatorEndpoint) + Send + Sync),
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    use hyper::StatusCode;
    if let Some(t) = token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(t.as_str()) {
            return answer(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "auth: a missing or wrong token"}),
            );
        }
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/status") => {
            let (epoch, peers) = {
                let c = lock(&endpoint.coord);
                (c.coordinator().epoch(), endpoint.addresses())
            };
            answer(
                StatusCode::OK,
                serde_json::json!({
                    "coordinator": endpoint.name(),
                    "epoch": epoch,
                    "participants": peers.keys().collect::<Vec<_>>(),
                }),
            )
        }
        ("POST", "/tx") => {
            let body = http_body_util::Limited::new(req.into_body(), MAX_TX_REQUEST)
                .collect()
                .await;
            let body = match body {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("reading the request: {e}")}),
                    )
                }
            };
            let r = match TxRequest::parse(&body) {
                Ok(r) => r,
                Err(e) => return answer(StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
            };
            let timeout = Duration::from_millis(r.timeout_ms.unwrap_or(5_000).clamp(1, 600_000));
            let out = endpoint.run(r.parts(), timeout, timeout).await;
            ran(endpoint);
            match out {
                Ok(o) => answer(
                    StatusCode::OK,
                    serde_json::to_value(o).expect("serializable"),
                ),
                Err(e) => answer(StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
            }
        }
        (m, p) => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no {m} {p} here: POST /tx or GET /status")}),
        ),
    }
}

/// `kuzu-sync tx`'s side: sends a request to a coordinator at `url` (`http://HOST:PORT`)
/// and returns the HTTP status and the JSON answer.
pub async fn post_tx(
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), String> {
    use http_body_util::BodyExt;
    let target = crate::link::parse_url(url)
        .filter(|t| t.scheme == "http" || t.scheme == "https")
        .ok_or_else(|| format!("unsupported coordinator URL {url:?}: expected http://HOST:PORT"))?;
    let exchange = async {
        let (stream, _) = crate::link::open_stream(&target, Duration::from_secs(10))
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::post("/tx")
            .header(hyper::header::HOST, &target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Body::new(body.into()))
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let bytes = http_body_util::Limited::new(res.into_body(), MAX_TX_REQUEST)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the coordinator's answer is not JSON: {e}"))?;
        Ok((status, json))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
}
