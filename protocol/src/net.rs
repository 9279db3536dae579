//! Running sync sessions over links, on tokio: the session driver, and the client (one-shot
//! or live, any number of remotes at once, reconnecting). The hub is in [`crate::hub`].
//!
//! The replica is shared by sessions and the application ([`Shared`]). On a hub, every
//! session hands its replica work to the replica's one writer thread and decodes and
//! encodes its frames on its own task; new events wake the sessions that stream them
//! through a `watch` channel, with no polling.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use kuzu_sync_engine::antientropy::{self, EntityRow};
use kuzu_sync_engine::merkle::{self, MerkleError, MerkleRemote, Summary};
use kuzu_sync_engine::ports::{EventStore, GraphStore};
use kuzu_sync_engine::sync::{
    pack, unpack, Lifecycle, Message, NetworkQuality, Output, Session, SessionConfig,
    CAP_NO_EXCHANGE,
};
use kuzu_sync_engine::{Event, Op, Replica, ReplicaError, VersionVector};

use crate::frame::{Encoder, FrameDecoder, DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME};
use crate::link::{self, Link, Progress};

pub use crate::hub::{serve, serve_async, HubConfig, DEFAULT_MAX_CONNECTIONS};

type Job<E, G> = Box<dyn FnOnce(&mut Replica<E, G>) + Send>;

/// A replica shared by sessions (and the application), with a change counter the sessions
/// watch to stream new events.
pub struct Shared<E: EventStore, G: GraphStore> {
    replica: Mutex<Replica<E, G>>,
    generation: watch::Sender<u64>,
    /// The writer thread's queue, once started.
    writer: Mutex<Option<std_mpsc::Sender<Job<E, G>>>>,
}

impl<E: EventStore, G: GraphStore> std::fmt::Debug for Shared<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl<E: EventStore, G: GraphStore> Shared<E, G> {
    pub fn new(replica: Replica<E, G>) -> Arc<Self> {
        Arc::new(Shared {
            replica: Mutex::new(replica),
            generation: watch::Sender::new(0),
            writer: Mutex::new(None),
        })
    }

    /// The replica, locked. Call [`Shared::changed`] after changing it outside a session.
    ///
    /// If a thread panicked while it held the replica, its in-memory state may be half
    /// changed: it is rebuilt from its stores before anyone uses it again, never reused
    /// as it was. A rebuild that fails leaves the replica refusing work
    /// ([`ReplicaError::Unrecovered`]) until one succeeds.
    pub fn lock(&self) -> MutexGuard<'_, Replica<E, G>> {
        match self.replica.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                self.replica.clear_poison();
                guard.mark_unrecovered("a thread panicked while it held the replica");
                let _ = guard.ensure_recovered();
                guard
            }
        }
    }

    /// Writes local ops and lets every session stream them.
    pub fn write(&self, ops: Vec<Op>) -> Result<Vec<kuzu_sync_engine::EventId>, ReplicaError> {
        let ids = self.lock().write(ops)?;
        self.changed();
        Ok(ids)
    }

    /// Imports events (say, a bundle) and lets every session stream them.
    pub fn import(
        &self,
        events: Vec<Event>,
    ) -> Result<kuzu_sync_engine::replica::ImportOutcome, ReplicaError> {
        let out = self.lock().import(events)?;
        self.changed();
        Ok(out)
    }

    /// Wakes every session: the replica has new events to stream.
    pub fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that wakes on [`Shared::changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Takes the replica back (when no session holds the Arc any more).
    pub fn into_inner(self: Arc<Self>) -> Option<Replica<E, G>> {
        Arc::into_inner(self).map(|s| match s.replica.into_inner() {
            Ok(r) => r,
            Err(poisoned) => {
                let mut r = poisoned.into_inner();
                r.mark_unrecovered("a thread panicked while it held the replica");
                let _ = r.ensure_recovered();
                r
            }
        })
    }
}

impl<E, G> Shared<E, G>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    /// Runs `f` on the replica's writer thread, started on first use: the one thread that
    /// works on the replica for every session, taking its queue in batches under one lock.
    /// `None` if `f` panicked (the replica is then rebuilt from its stores, as after any
    /// panic while it was held).
    pub async fn run<R, F>(self: &Arc<Self>, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Replica<E, G>) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<E, G> = Box::new(move |r| {
            let _ = tx.send(f(r));
        });
        if let Err(std_mpsc::SendError(job)) = self.writer_queue().send(job) {
            // The writer thread died (a panic outside a job): start another.
            *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.writer_queue().send(job).ok()?;
        }
        rx.await.ok()
    }

    fn writer_queue(self: &Arc<Self>) -> std_mpsc::Sender<Job<E, G>> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = w.as_ref() {
            return tx.clone();
        }
        let (tx, rx) = std_mpsc::channel::<Job<E, G>>();
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("kuzu-sync-writer".into())
            .spawn(move || writer_thread(weak, rx))
            .expect("a thread for the replica's writer");
        *w = Some(tx.clone());
        tx
    }
}

fn writer_thread<E: EventStore, G: GraphStore>(
    shared: Weak<Shared<E, G>>,
    jobs: std_mpsc::Receiver<Job<E, G>>,
) {
    while let Ok(job) = jobs.recv() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut r = shared.lock();
        let mut next = Some(job);
        // At most this many jobs per lock: the application's own writes get their turn.
        let mut batch = 0;
        while let Some(job) = next.take() {
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut r))).is_err() {
                r.mark_unrecovered("a session panicked while it worked on the replica");
                let _ = r.ensure_recovered();
            }
            batch += 1;
            if batch < 64 {
                next = jobs.try_recv().ok();
            }
        }
    }
}

/// How a driver reaches the replica: through its writer thread (a hub, many sessions), or
/// inline on the calling task (a client with a few sessions).
enum Access<'a, E: EventStore, G: GraphStore> {
    Inline(&'a Shared<E, G>),
    Writer(&'a Arc<Shared<E, G>>),
}

impl<E, G> Access<'_, E, G>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    async fn run<R, F>(&self, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Replica<E, G>) -> R + Send + 'static,
    {
        match self {
            Access::Inline(s) => Some(f(&mut s.lock())),
            Access::Writer(s) => s.run(f).await,
        }
    }

    fn shared(&self) -> &Shared<E, G> {
        match self {
            Access::Inline(s) => s,
            Access::Writer(s) => s,
        }
    }
}

/// Runs a future to completion on a runtime of its own: the blocking API's bridge.
/// Must not be called from inside a tokio runtime (use the `_async` functions there).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Cancels `token` once `stop` is set (checked every 50 ms by one task): the bridge from
/// the blocking API's stop flag to the async code.
pub(crate) fn cancel_on(stop: Arc<AtomicBool>, token: CancellationToken) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) && !token.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel();
    });
}
pub type EventSink = Arc<dyn Fn(&str, &Lifecycle) + Send + Sync>;

/// A sink that drops everything.
pub fn no_events() -> EventSink {
    Arc::new(|_, _| {})
}

/// How a session is driven.
#[derive(Clone)]
pub struct DriveOptions {
    /// Stop once synced (client one-shot) instead of streaming.
    pub one_shot: bool,
    pub max_frame: usize,
    /// Set to stop (checked every 50 ms); `cancel` stops at once.
    pub stop: Arc<AtomicBool>,
    /// Cancelled to stop the session (and, for `watch`, its reconnection).
    pub cancel: CancellationToken,
    pub events: EventSink,
    /// Give up on a session that receives nothing for this long (None: never). Live
    /// sessions are kept alive by the transport; one-shot ones use it as a timeout.
    pub idle_timeout: Option<Duration>,
    /// A frame begun but not completed within this time is a truncated frame: the
    /// connection gets an error and is closed.
    pub frame_timeout: Duration,
    /// Server: a connection that has not completed its handshake within this time gets an
    /// error and is closed. Until then its frames are limited to
    /// [`HANDSHAKE_MAX_FRAME`](crate::frame::HANDSHAKE_MAX_FRAME).
    pub handshake_timeout: Duration,
    /// An established session whose oldest unanswered ping is this old is closed: the
    /// other side is gone or stuck.
    pub pong_timeout: Duration,
    /// Bytes of large frames (1 MiB or more) being received and decoded at once, shared
    /// by a hub's sessions (see [`HubConfig::decode_budget`]): a session waits for its
    /// share before it reads the rest of such a frame. None: no budget.
    pub decode_budget: Option<Arc<tokio::sync::Semaphore>>,
    /// Where transaction messages go (see [`crate::txnet`]); None: a transaction message
    /// is a protocol error.
    pub tx: Option<Arc<dyn crate::txnet::TxEndpoint>>,
    /// Client: the peer id the server must have (a coordinator checks it reached the
    /// participant it meant to); another is an error.
    pub tx_expect_peer: Option<String>,
}

impl std::fmt::Debug for DriveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveOptions")
            .field("one_shot", &self.one_shot)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            one_shot: false,
            max_frame: DEFAULT_MAX_FRAME,
            stop: Arc::new(AtomicBool::new(false)),
            cancel: CancellationToken::new(),
            events: no_events(),
            idle_timeout: None,
            frame_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(60),
            decode_budget: None,
            tx: None,
            tx_expect_peer: None,
        }
    }
}

/// Traffic and outcome of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionReport {
    pub remote: String,
    pub transport: String,
    pub events_sent: u64,
    pub events_received: u64,
    pub frames_sent: u64,
    /// MessagePack bytes before compression, sent.
    pub raw_bytes_sent: u64,
    /// Bytes on the wire, sent (frame headers included).
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
    pub synced: bool,
    /// The sync point sent did not verify on the server (histories diverged).
    pub full_resync_required: bool,
    /// Entities copied from the remote by the Merkle repair of a full resync.
    pub repaired: usize,
    /// Events the snapshot received and installed stands for (0: none; this replica was
    /// not behind the remote's compacted log).
    pub snapshot_installed: u64,
    /// Events the snapshot sent stands for (0: none).
    pub snapshot_sent: u64,
    /// What both sides held at the end (for the next sync point).
    #[serde(skip)]
    pub common: VersionVector,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("{transport}: {source}")]
    Io {
        transport: String,
        #[source]
        source: io::Error,
    },
    #[error("{transport}: refused: {reason}")]
    Refused { transport: String, reason: String },
    #[error("{transport}: {reason}")]
    Protocol { transport: String, reason: String },
    #[error("{transport}: no message for {secs} s")]
    Timeout { transport: String, secs: u64 },
    #[error("unsupported remote {0:?}: expected tcp://HOST:PORT, tls://HOST:PORT, ws[s]://HOST[:PORT]/PATH or http[s]://HOST[:PORT]/PATH")]
    BadUrl(String),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

impl NetError {
    /// True if retrying cannot help (the remote refused us, or the URL is wrong).
    pub fn is_permanent(&self) -> bool {
        matches!(self, NetError::Refused { .. } | NetError::BadUrl(_))
    }
}

/// The most bytes a session leaves queued on its link before it stops taking new local
/// changes (backpressure): a slow client makes the hub hold at most about this much for
/// it, and gets the rest once it has read what is queued.
pub const HIGH_WATER: usize = 1 << 20;
/// Frames of at least this many bytes count against a hub's decode budget.
pub const BUDGETED_FRAME: usize = 1 << 20;

/// A hub stops reading from a peer while this much waits to be written to it: a client
/// that asks and never reads cannot make the hub queue answers without end. (Clients
/// always read, so two sides never both stop.)
pub const READ_PAUSE: usize = 32 << 20;

/// Runs one session over `link` until it closes, fails, is stopped, or (one-shot) has
/// synced, with the replica's work on its writer thread (see [`Shared::run`]). Then stores
/// what the session learnt of the remote's events (see `Replica::note_remote`).
pub async fn drive<E, G>(
    link: &mut dyn Link,
    session: Session,
    shared: &Arc<Shared<E, G>>,
    opts: &DriveOptions,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    drive_with(link, session, Access::Writer(shared), opts, Instant::now()).await
}

async fn drive_with<E, G>(
    link: &mut dyn Link,
    session: Session,
    access: Access<'_, E, G>,
    opts: &DriveOptions,
    started: Instant,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let result = drive_session(link, session, &access, opts, started).await;
    let saved = access.run(|r| r.save_known_peers()).await.unwrap_or(Ok(()));
    let report = result?;
    saved?;
    Ok(report)
}

fn writer_failed(name: &str) -> NetError {
    NetError::Protocol {
        transport: name.to_string(),
        reason: "internal error: the replica's work for this session panicked; the replica \
                 was rebuilt from its stores"
            .into(),
    }
}

async fn drive_session<E, G>(
    link: &mut dyn Link,
    mut session: Session,
    access: &Access<'_, E, G>,
    opts: &DriveOptions,
    started: Instant,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let name = link.describe();
    let mut report = SessionReport {
        transport: name.clone(),
        ..SessionReport::default()
    };
    // Until the handshake completes, only small frames (see `HANDSHAKE_MAX_FRAME`).
    let mut decoder = FrameDecoder::new(opts.max_frame.min(HANDSHAKE_MAX_FRAME));
    let mut raised = false;
    let mut encoder = Encoder {
        max_frame: opts.max_frame,
        ..Encoder::default()
    };
    let mut refused: Option<String> = None;
    let mut failed: Option<String> = None;
    let io_err = |source: io::Error| NetError::Io {
        transport: name.clone(),
        source,
    };
    let mut changes = access.shared().subscribe();
    let mut last_gen = *changes.borrow_and_update();
    let mut pending: Vec<Output> = Vec::new();
    if session.is_client() {
        let (s, outs) = access
            .run(move |r| {
                let outs = session.start(r);
                (session, outs)
            })
            .await
            .ok_or_else(|| writer_failed(&name))?;
        session = s;
        pending = outs;
    }
    let mut buf = Vec::new();
    let mut last_rx = Instant::now();
    let mut meter = Meter::default();
    let mut closing = false;
    // The budget held for the large frame being received: (its size, the permits).
    let mut budget_held: Option<(usize, tokio::sync::OwnedSemaphorePermit)> = None;
    // Transaction messages the endpoint posts to this session's peer.
    let mut tx_posts: Option<tokio::sync::mpsc::UnboundedReceiver<kuzu_sync_engine::tx::WireMsg>> =
        None;
    loop {
        if session.is_established() && meter.ping_due() {
            let nonce = meter.ping_sent();
            pending.extend(session.ping(nonce));
        }
        // Carry out what the session asked for.
        let mut pending_after: Vec<Output> = Vec::new();
        for out in pending.drain(..) {
            match out {
                Output::Send(msg) => {
                    encoder.compress = session.compression();
                    let (frame, stats) = encoder.encode(&msg).map_err(|e| NetError::Protocol {
                        transport: name.clone(),
                        reason: e.to_string(),
                    })?;
                    if let Message::Events(ev) = &msg {
                        report.events_sent += ev.len() as u64;
                        meter.batch_sent(frame.len());
                    }
                    report.frames_sent += 1;
                    report.raw_bytes_sent += stats.raw as u64;
                    report.wire_bytes_sent += stats.wire as u64;
                    link.queue(frame);
                }
                Output::Event(ev) => {
                    match &ev {
                        Lifecycle::Refused { reason } => refused = Some(reason.clone()),
                        Lifecycle::Error { reason } => failed = Some(reason.clone()),
                        Lifecycle::Change { events, .. } => {
                            report.events_received += *events as u64;
                        }
                        Lifecycle::Snapshot {
                            direction, events, ..
                        } => {
                            if *direction == "installed" {
                                report.snapshot_installed = *events;
                            } else {
                                report.snapshot_sent = *events;
                            }
                        }
                        _ => {}
                    }
                    (opts.events)(&name, &ev);
                }
                Output::Close => closing = true,
                Output::Tx { from, msg } => match &opts.tx {
                    Some(endpoint) => {
                        for reply in endpoint.handle(from, msg).await {
                            pending_after.push(Output::Send(Message::Tx(reply)));
                        }
                    }
                    None => pending_after.extend(
                        session.protocol_error("this side takes no part in transactions".into()),
                    ),
                },
                Output::Pong(nonce) => {
                    if let Some(q) = meter.pong(nonce) {
                        pending_after.extend(session.set_quality(q));
                    }
                }
            }
        }
        pending.append(&mut pending_after);
        if !pending.is_empty() {
            continue;
        }
        report.remote = session.remote().unwrap_or_default().to_string();
        if closing || session.is_closed() {
            // The remote may already be gone after our error or refusal.
            link::close(link, Duration::from_secs(5)).await;
            if let Some(reason) = refused {
                return Err(NetError::Refused {
                    transport: name,
                    reason,
                });
            }
            if let Some(reason) = failed {
                return Err(NetError::Protocol {
                    transport: name,
                    reason,
                });
            }
            return Ok(report);
        }
        if opts.one_shot && session.is_synced() {
            report.synced = true;
            report.full_resync_required = session.full_resync_required();
            let remote_has = session.remote_has().clone();
            report.common = access
                .run(move |r| r.version_vector().meet(&remote_has))
                .await
                .ok_or_else(|| writer_failed(&name))?;
            link::close(link, Duration::from_secs(30)).await;
            return Ok(report);
        }
        if opts.stop.load(Ordering::SeqCst) || opts.cancel.is_cancelled() {
            link::close(link, Duration::from_secs(5)).await;
            return Ok(report);
        }
        // A snapshot goes out one part at a time, as the link drains: a session holds one
        // part, not the whole state (the parts share the replica's one copy).
        if session.is_sending_snapshot() && link.queued() < HIGH_WATER {
            pending = session.poll_send();
            if !pending.is_empty() {
                continue;
            }
        }
        // With long round trips, live changes are gathered for a second into one batch.
        let gather_until = (session.strategy() == kuzu_sync_engine::sync::Strategy::BatchOptimized)
            .then(|| meter.last_live + Duration::from_secs(1))
            .filter(|t| *t > Instant::now());
        // Backpressure: new changes wait while much is queued for the remote.
        let may_stream =
            session.is_established() && gather_until.is_none() && link.queued() < HIGH_WATER;
        if may_stream && *changes.borrow_and_update() != last_gen {
            last_gen = *changes.borrow();
            meter.last_live = Instant::now();
            let (s, outs) = access
                .run(move |r| {
                    let outs = session.local_changed(r);
                    (session, outs)
                })
                .await
                .ok_or_else(|| writer_failed(&name))?;
            session = s;
            pending = outs;
            continue;
        }
        // The next time something is due without input.
        let mut due: Vec<Instant> = Vec::with_capacity(6);
        if session.is_established() {
            due.push(meter.next_ping());
        }
        if let Some(t) = meter.oldest_ping() {
            due.push(t + opts.pong_timeout);
        }
        if !session.is_client() && !session.is_established() {
            due.push(started + opts.handshake_timeout);
        }
        if decoder.pending() > 0 {
            due.push(last_rx + opts.frame_timeout);
        }
        if let Some(limit) = opts.idle_timeout {
            due.push(last_rx + limit);
        }
        if let Some(t) = gather_until {
            due.push(t);
        }
        let due = due
            .into_iter()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        buf.clear();
        let read = session.is_client() || link.queued() < READ_PAUSE;
        let progress = tokio::select! {
            Some(m) = async { tx_posts.as_mut()?.recv().await }, if tx_posts.is_some() => {
                pending.push(Output::Send(Message::Tx(m)));
                continue;
            }
            r = link::io_maybe_reading(link, &mut buf, read) => Some(r),
            _ = changes.changed(), if may_stream => None,
            _ = tokio::time::sleep_until(due.into()) => None,
            _ = opts.cancel.cancelled() => None,
        };
        match progress {
            Some(Ok(Progress::Received(n))) => {
                last_rx = Instant::now();
                report.wire_bytes_received += n as u64;
                decoder.push(&buf);
                if buf.capacity() > 64 << 10 {
                    buf = Vec::new();
                }
                pending = receive_all(
                    &mut session,
                    &mut decoder,
                    access,
                    &mut meter,
                    &name,
                    opts.max_frame,
                )
                .await?;
                if session.is_established() && !raised {
                    raised = true;
                    link.set_max_message(opts.max_frame + 4);
                    let remote = session.remote().unwrap_or_default().to_string();
                    if let Some(want) = &opts.tx_expect_peer {
                        if *want != remote {
                            pending.extend(
                                session
                                    .protocol_error(format!("this is peer {remote}, not {want}")),
                            );
                            continue;
                        }
                    }
                    if let Some(endpoint) = &opts.tx {
                        tx_posts = Some(endpoint.attach(&remote));
                    }
                }
                decoder.release_idle();
                // A large frame under way takes its share of the hub's decode budget
                // before more of it is read; the share goes back once it is decoded.
                let incomplete = decoder
                    .incomplete_frame()
                    .filter(|n| *n >= BUDGETED_FRAME && *n <= opts.max_frame + 4);
                if budget_held.as_ref().map(|(n, _)| *n) != incomplete {
                    budget_held = None;
                    if let (Some(n), Some(budget)) = (incomplete, &opts.decode_budget) {
                        let permits = u32::try_from(n).unwrap_or(u32::MAX);
                        let permit = tokio::select! {
                            p = budget.clone().acquire_many_owned(permits) => p.ok(),
                            _ = opts.cancel.cancelled() => None,
                        };
                        budget_held = permit.map(|p| (n, p));
                    }
                }
                continue;
            }
            Some(Ok(Progress::Sent)) => continue,
            Some(Err(e))
                if e.kind() == io::ErrorKind::UnexpectedEof && session.is_established() =>
            {
                // The other side went away after a good handshake: a disconnect, not a
                // protocol failure.
                (opts.events)(
                    &name,
                    &Lifecycle::Disconnect {
                        peer: report.remote.clone(),
                        reason: e.to_string(),
                    },
                );
                return Ok(report);
            }
            Some(Err(e)) => return Err(io_err(e)),
            None => {}
        }
        // Deadlines.
        let now = Instant::now();
        if decoder.pending() > 0 && now >= last_rx + opts.frame_timeout {
            pending.extend(session.protocol_error(format!(
                "truncated frame: {} bytes of an incomplete frame and nothing more for {} ms",
                decoder.pending(),
                opts.frame_timeout.as_millis()
            )));
        } else if opts
            .idle_timeout
            .is_some_and(|limit| now >= last_rx + limit)
        {
            link::close(link, Duration::from_secs(1)).await;
            return Err(NetError::Timeout {
                transport: name,
                secs: opts.idle_timeout.unwrap_or_default().as_secs(),
            });
        } else if !session.is_client()
            && !session.is_established()
            && now >= started + opts.handshake_timeout
        {
            pending.extend(session.protocol_error(format!(
                "no handshake within {} ms",
                opts.handshake_timeout.as_millis()
            )));
        } else if let Some(age) = meter.oldest_unanswered() {
            if age > opts.pong_timeout && !session.is_closed() {
                pending.extend(
                    session
                        .protocol_error(format!("no answer to a ping for {} ms", age.as_millis())),
                );
            }
        }
    }
}

/// Hands every complete message to the session, in order; what they caused, in order.
/// Before the handshake completes, one message at a time (the frame limit is raised after
/// it); then in batches of up to 64 per trip to the replica.
async fn receive_all<E, G>(
    session: &mut Session,
    decoder: &mut FrameDecoder,
    access: &Access<'_, E, G>,
    meter: &mut Meter,
    name: &str,
    max_frame: usize,
) -> Result<Vec<Output>, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let mut pending = Vec::new();
    loop {
        let most = if session.is_established() {
            decoder.set_max_frame(max_frame);
            64
        } else {
            1
        };
        let mut batch = Vec::new();
        let mut bad = None;
        while batch.len() < most {
            match decoder.next_message() {
                Ok(Some(m)) => batch.push(m),
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        let taken = batch.len();
        if taken > 0 {
            let s = std::mem::replace(session, Session::client(SessionConfig::default()));
            let (s, results, changed) = access
                .run(move |r| {
                    let mut s = s;
                    let mut results = Vec::with_capacity(batch.len());
                    let mut changed = false;
                    for msg in batch {
                        let acked = matches!(msg, Message::Ack(_));
                        let outs = s.receive(msg, r);
                        changed |= outs
                            .iter()
                            .any(|o| matches!(o, Output::Event(Lifecycle::Change { .. })));
                        results.push((acked, outs));
                        if s.is_closed() {
                            break;
                        }
                    }
                    (s, results, changed)
                })
                .await
                .ok_or_else(|| writer_failed(name))?;
            *session = s;
            if changed {
                access.shared().changed();
            }
            for (acked, outs) in results {
                // In order: what the message caused first, then what a new measure causes
                // (batches must go out in the order they are made).
                pending.extend(outs);
                if acked {
                    if let Some(q) = meter.ack() {
                        pending.extend(session.set_quality(q));
                    }
                }
            }
            if session.is_closed() {
                return Ok(pending);
            }
        }
        if let Some(reason) = bad {
            pending.extend(session.protocol_error(reason));
            return Ok(pending);
        }
        if taken == 0 {
            return Ok(pending);
        }
    }
}

/// Measures a live session: round trips from pings, throughput from each batch of events
/// and the time until its ack (less one round trip), both smoothed.
#[derive(Debug)]
struct Meter {
    next_nonce: u64,
    pings: std::collections::HashMap<u64, Instant>,
    last_ping: Option<Instant>,
    in_flight: std::collections::VecDeque<(Instant, usize)>,
    rtt_ms: Option<f64>,
    throughput_bps: Option<f64>,
    last_live: Instant,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            next_nonce: 1,
            pings: Default::default(),
            last_ping: None,
            in_flight: Default::default(),
            rtt_ms: None,
            throughput_bps: None,
            last_live: Instant::now() - Duration::from_secs(10),
        }
    }
}

/// Pings go out at the handshake and then every few seconds.
const PING_EVERY: Duration = Duration::from_secs(3);
/// Batches smaller than this say little about throughput.
const MIN_SAMPLE_BYTES: usize = 2048;

impl Meter {
    fn ping_due(&self) -> bool {
        self.last_ping.is_none_or(|t| t.elapsed() >= PING_EVERY)
    }

    fn ping_sent(&mut self) -> u64 {
        let n = self.next_nonce;
        self.next_nonce += 1;
        self.pings.insert(n, Instant::now());
        self.last_ping = Some(Instant::now());
        n
    }

    /// When the next ping is due.
    fn next_ping(&self) -> Instant {
        self.last_ping.map_or_else(Instant::now, |t| t + PING_EVERY)
    }

    /// When the oldest unanswered ping went out.
    fn oldest_ping(&self) -> Option<Instant> {
        self.pings.values().min().copied()
    }

    /// How long the oldest ping has gone unanswered, if one has.
    fn oldest_unanswered(&self) -> Option<Duration> {
        self.pings.values().map(|t| t.elapsed()).max()
    }

    fn quality(&self) -> NetworkQuality {
        NetworkQuality {
            rtt_ms: self.rtt_ms.unwrap_or(0.0),
            throughput_bps: self.throughput_bps.unwrap_or(f64::INFINITY),
        }
    }

    fn smooth(old: Option<f64>, sample: f64) -> f64 {
        match old {
            None => sample,
            Some(o) => 0.7 * o + 0.3 * sample,
        }
    }

    fn pong(&mut self, nonce: u64) -> Option<NetworkQuality> {
        let sent = self.pings.remove(&nonce)?;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        self.rtt_ms = Some(Self::smooth(self.rtt_ms, ms));
        Some(self.quality())
    }

    fn batch_sent(&mut self, bytes: usize) {
        self.in_flight.push_back((Instant::now(), bytes));
    }

    /// Acks come back in the order of the batches.
    fn ack(&mut self) -> Option<NetworkQuality> {
        let (sent, bytes) = self.in_flight.pop_front()?;
        if bytes < MIN_SAMPLE_BYTES {
            return None;
        }
        let rtt = self.rtt_ms.unwrap_or(0.0) / 1000.0;
        let secs = (sent.elapsed().as_secs_f64() - rtt).max(0.001);
        let bps = bytes as f64 * 8.0 / secs;
        self.throughput_bps = Some(Self::smooth(self.throughput_bps, bps));
        Some(self.quality())
    }
}

/// One-shot sync with one remote: handshake, exchange, EOSE, acks.
///
/// Blocking: runs on a tokio runtime of its own, so it must not be called from inside one.
pub fn sync_once<E, G>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    events: EventSink,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let opts = DriveOptions {
        one_shot: true,
        events,
        idle_timeout: Some(Duration::from_secs(120)),
        ..DriveOptions::default()
    };
    let mut with_point = config.clone();
    with_point.sync_point = shared.lock().stored_sync_point(url)?;
    let mut report = block_on(one_session(shared, url, with_point, &opts))?;
    if !report.synced {
        return Err(NetError::Protocol {
            transport: report.transport,
            reason: "the remote closed the connection before the sync completed".into(),
        });
    }
    if report.full_resync_required {
        // The histories diverged: after the exchange (which assumed nothing), a Merkle
        // repair. Rows the remote has and this replica lacks are copied here; rows this
        // replica has that the remote lacks or holds differently are written again here,
        // so the next exchange carries them there. Nothing is deleted: nothing is lost.
        let d = remote_diff(shared, url, config.clone())?;
        let (ops, _) = antientropy::ops_for(
            d.missing_here
                .iter()
                .chain(&d.missing_there)
                .chain(d.different.iter().map(|c| &c.local)),
            [],
            shared.lock().engine().schema(),
        );
        report.repaired = ops.len();
        if !ops.is_empty() {
            shared.write(ops)?;
            let again = block_on(one_session(shared, url, config, &opts))?;
            report.common = again.common;
            report.events_sent += again.events_sent;
            report.events_received += again.events_received;
        }
    }
    let mut r = shared.lock();
    // None when the common events are partly compacted away here: no point is kept, and
    // the next sync is an ordinary version-vector exchange.
    match r.sync_point(&report.common)? {
        Some(point) => r.store_sync_point(url, &point)?,
        None => r.clear_sync_point(url)?,
    }
    Ok(report)
}

/// Connects to `url` and drives one client session, with the replica's work inline.
async fn one_session<E, G>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    opts: &DriveOptions,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let mut link = connect(url, Duration::from_secs(10)).await?;
    drive_with(
        &mut *link,
        Session::client(config),
        Access::Inline(shared),
        opts,
        Instant::now(),
    )
    .await
}

/// Opens a link to a remote URL: `tcp://HOST:PORT`, `tls://HOST:PORT`,
/// `ws[s]://HOST[:PORT]/PATH` or `http[s]://HOST[:PORT]/PATH`. TLS trusts the Mozilla
/// roots and the authorities in the file named by `KUZU_SYNC_TLS_CA`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Box<dyn Link>, NetError> {
    match link::connect(url, timeout).await {
        None => Err(NetError::BadUrl(url.to_string())),
        Some(r) => r.map_err(|source| NetError::Io {
            transport: url.to_string(),
            source,
        }),
    }
}

/// What [`sync_offline_changes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OfflineSyncReport {
    /// Ops queued while offline, and what coalescing made of them.
    pub raw_operations: usize,
    pub coalesced_operations: usize,
    /// Queued ops that reached the remote (acknowledged).
    pub synced_operations: usize,
    /// Conflicts resolved while applying what came back.
    pub conflicts_resolved: usize,
    pub session: SessionReport,
}

/// Brings an offline replica back: coalesces its queue and goes online (one durable step),
/// then syncs one-shot with `url`. Afterwards the queue is empty. If the sync fails, the
/// replica is online with its (coalesced) writes unsent; the next sync sends them.
pub fn sync_offline_changes<E, G>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    events: EventSink,
) -> Result<OfflineSyncReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let coalesced = shared.lock().go_online()?;
    let conflicts = Arc::new(AtomicU64::new(0));
    let sink: EventSink = {
        let conflicts = conflicts.clone();
        Arc::new(move |remote, e| {
            if matches!(e, Lifecycle::Conflict { .. }) {
                conflicts.fetch_add(1, Ordering::SeqCst);
            }
            events(remote, e)
        })
    };
    let session = sync_once(shared, url, config, sink)?;
    Ok(OfflineSyncReport {
        raw_operations: coalesced.raw,
        coalesced_operations: coalesced.coalesced,
        synced_operations: coalesced.coalesced,
        conflicts_resolved: conflicts.load(Ordering::SeqCst) as usize,
        session,
    })
}

/// An entity that differs: this replica's row and the remote's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changed {
    pub local: EntityRow,
    pub remote: EntityRow,
}

/// What a Merkle comparison with a remote found, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteDiff {
    pub equal: bool,
    pub local_root: String,
    pub remote_root: String,
    pub local_entities: u64,
    pub remote_entities: u64,
    /// Entities the remote has and this replica lacks (the remote's rows).
    pub missing_here: Vec<EntityRow>,
    /// Entities this replica has and the remote lacks (this replica's rows).
    pub missing_there: Vec<EntityRow>,
    pub different: Vec<Changed>,
    /// Tree hashes compared, round trips, and bytes on the wire both ways (frames
    /// included), for the whole comparison including the rows.
    pub comparisons: u64,
    pub round_trips: u32,
    pub wire_bytes: u64,
}

/// The remote side of a Merkle diff, over a live session: each call one request and its
/// answer. The diff itself is synchronous (the engine's `MerkleRemote`), so each request
/// runs on the runtime the link was made on.
struct NetRemote<'a> {
    rt: &'a tokio::runtime::Runtime,
    link: Box<dyn Link>,
    decoder: FrameDecoder,
    encoder: Encoder,
    summary: Summary,
    wire: u64,
    name: String,
}

impl NetRemote<'_> {
    fn ask(&mut self, msg: &Message) -> Result<Message, NetError> {
        let NetRemote {
            rt,
            link,
            decoder,
            encoder,
            wire,
            name,
            ..
        } = self;
        rt.block_on(ask(&mut **link, decoder, encoder, wire, name, msg))
    }

    fn merkle(&mut self, msg: &Message) -> Result<Message, MerkleError> {
        self.ask(msg)
            .map_err(|e| MerkleError::Remote(e.to_string()))
    }
}

fn malformed(what: &str) -> MerkleError {
    MerkleError::Malformed(format!("{what} of the wrong length"))
}

fn unexpected(m: &Message) -> MerkleError {
    MerkleError::Malformed(format!("unexpected {} answer", m.kind()))
}

impl MerkleRemote for NetRemote<'_> {
    fn summary(&mut self) -> Result<Summary, MerkleError> {
        Ok(self.summary)
    }

    fn descendants(
        &mut self,
        level: u32,
        parents: &[u32],
        depth: u32,
    ) -> Result<Vec<[u8; 32]>, MerkleError> {
        match self.merkle(&Message::MerkleDescendants {
            level,
            parents: parents.to_vec(),
            depth,
        })? {
            Message::MerkleHashes(h) => unpack(&h).ok_or_else(|| malformed("hashes")),
            m => Err(unexpected(&m)),
        }
    }

    fn fingerprints(&mut self, buckets: &[u32]) -> Result<Vec<Vec<[u8; 8]>>, MerkleError> {
        match self.merkle(&Message::MerkleFingerprints(buckets.to_vec()))? {
            Message::MerkleFingerprintLists(l) => l
                .iter()
                .map(|b| unpack(b).ok_or_else(|| malformed("fingerprints")))
                .collect(),
            m => Err(unexpected(&m)),
        }
    }

    fn entries(&mut self, picks: &[(u32, u32)]) -> Result<Vec<([u8; 16], [u8; 16])>, MerkleError> {
        match self.merkle(&Message::MerkleEntries(picks.to_vec()))? {
            Message::MerkleEntryList(l) => Ok(unpack::<32>(&l)
                .ok_or_else(|| malformed("entries"))?
                .into_iter()
                .map(|b| {
                    let (k, d) = b.split_at(16);
                    (k.try_into().expect("16"), d.try_into().expect("16"))
                })
                .collect()),
            m => Err(unexpected(&m)),
        }
    }
}

/// Compares this replica's resolved state with a remote's by Merkle tree, without
/// exchanging events: a handshake with the `no-exchange` capability, then questions.
/// Only the differing entities' rows travel.
pub fn remote_diff<E, G>(
    shared: &Shared<E, G>,
    url: &str,
    mut config: SessionConfig,
) -> Result<RemoteDiff, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NetError::Io {
            transport: url.to_string(),
            source,
        })?;
    let link = rt.block_on(connect(url, Duration::from_secs(10)))?;
    let name = link.describe();
    config.capabilities.push(CAP_NO_EXCHANGE.to_string());
    let mut session = Session::client(config);
    let mut remote = NetRemote {
        rt: &rt,
        link,
        decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
        encoder: Encoder::default(),
        summary: Summary {
            bucket_bits: 0,
            len: 0,
            root: [0; 32],
        },
        wire: 0,
        name: name.clone(),
    };
    // Handshake.
    let mut pending = session.start(&*shared.lock());
    while !session.is_established() {
        let mut next = None;
        for o in pending.drain(..) {
            match o {
                Output::Send(m) => next = Some(m),
                Output::Event(Lifecycle::Refused { reason }) => {
                    return Err(NetError::Refused {
                        transport: name,
                        reason,
                    })
                }
                Output::Event(Lifecycle::Error { reason }) => {
                    return Err(NetError::Protocol {
                        transport: name,
                        reason,
                    })
                }
                _ => {}
            }
        }
        let Some(m) = next else {
            return Err(NetError::Protocol {
                transport: name,
                reason: "the handshake ended without an answer".into(),
            });
        };
        let answer = remote.ask(&m)?;
        pending = session.receive(answer, &mut shared.lock());
        if session.is_established() {
            break;
        }
    }
    let (rows, schema_len) = {
        let r = shared.lock();
        let rows = antientropy::entities(&r.engine().dump(), r.engine().schema(), true);
        let n = rows.len();
        (rows, n)
    };
    let summary = match remote.ask(&Message::MerkleSummary {
        len: schema_len as u64,
    })? {
        Message::MerkleSummaryReply {
            bucket_bits,
            len,
            root,
        } if root.len() == 32 => Summary {
            bucket_bits,
            len,
            root: root.try_into().expect("32 bytes"),
        },
        m => {
            return Err(NetError::Protocol {
                transport: name,
                reason: format!("unexpected {} answer to merkle_summary", m.kind()),
            })
        }
    };
    // The remote picks the bucket bits; an index is built with them here, so they are
    // bounded before anything is allocated for them.
    if summary.bucket_bits > merkle::MAX_BUCKET_BITS {
        return Err(NetError::Protocol {
            transport: name,
            reason: format!(
                "the remote answered {} bucket bits, over the most of {}",
                summary.bucket_bits,
                merkle::MAX_BUCKET_BITS
            ),
        });
    }
    remote.summary = summary;
    let local = antientropy::index(&rows, summary.bucket_bits);
    let report = merkle::diff(&local, &mut remote).map_err(|e| NetError::Protocol {
        transport: name.clone(),
        reason: e.to_string(),
    })?;
    let wanted: Vec<[u8; 16]> = report
        .missing_here
        .iter()
        .chain(&report.different)
        .copied()
        .collect();
    let asked_rows = !wanted.is_empty();
    let remote_rows = if wanted.is_empty() {
        Vec::new()
    } else {
        match remote.ask(&Message::MerkleRows(pack(&wanted)))? {
            Message::MerkleRowList(r) => {
                // Rows the remote sends may become local writes (repair): each must be
                // one asked for, and match its key and digest.
                let asked: std::collections::HashSet<[u8; 16]> = wanted.iter().copied().collect();
                let r_lock = shared.lock();
                let schema = r_lock.engine().schema();
                if let Some(bad) = r.iter().find(|row| {
                    !asked.contains(&row.key) || antientropy::row_contradicts(row, schema)
                }) {
                    return Err(NetError::Protocol {
                        transport: name,
                        reason: format!(
                            "the remote sent a row it was not asked for, or that does not \
                             match its key and digest: {} ({})",
                            bad.label.chars().take(200).collect::<String>(),
                            bad.table.chars().take(200).collect::<String>()
                        ),
                    });
                }
                drop(r_lock);
                r
            }
            m => {
                return Err(NetError::Protocol {
                    transport: name,
                    reason: format!("unexpected {} answer to merkle_rows", m.kind()),
                })
            }
        }
    };
    let wire = remote.wire;
    rt.block_on(link::close(&mut *remote.link, Duration::from_secs(5)));
    let local_by_key: std::collections::HashMap<_, _> = rows.iter().map(|r| (r.key, r)).collect();
    let remote_by_key: std::collections::HashMap<_, _> =
        remote_rows.iter().map(|r| (r.key, r)).collect();
    let pick = |keys: &[[u8; 16]], from: &std::collections::HashMap<[u8; 16], &EntityRow>| {
        keys.iter()
            .filter_map(|k| from.get(k).map(|r| (*r).clone()))
            .collect::<Vec<_>>()
    };
    Ok(RemoteDiff {
        equal: report.is_empty(),
        local_root: hex(&local.root()),
        remote_root: hex(&summary.root),
        local_entities: local.len() as u64,
        remote_entities: summary.len,
        missing_here: pick(&report.missing_here, &remote_by_key),
        missing_there: pick(&report.missing_there, &local_by_key),
        different: report
            .different
            .iter()
            .filter_map(|k| {
                Some(Changed {
                    local: (*local_by_key.get(k)?).clone(),
                    remote: (*remote_by_key.get(k)?).clone(),
                })
            })
            .collect(),
        comparisons: report.comparisons,
        // The handshake, the diff's own round trips (its summary included), the rows.
        round_trips: report.round_trips + 1 + u32::from(asked_rows),
        wire_bytes: wire,
    })
}

/// What [`pull_repair`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    pub written: usize,
    /// Entities ops cannot copy (the schema), by label.
    pub not_repairable: Vec<String>,
}

/// Makes this replica's resolved state the remote's, as found by [`remote_diff`]: the
/// remote's rows of what differs or is missing here are written, what the remote lacks is
/// deleted, all as ordinary local writes (which then replicate).
pub fn pull_repair<E: EventStore, G: GraphStore>(
    shared: &Shared<E, G>,
    d: &RemoteDiff,
) -> Result<Repair, NetError> {
    let mut r = shared.lock();
    let (ops, not_repairable) = antientropy::ops_for(
        d.missing_here
            .iter()
            .chain(d.different.iter().map(|c| &c.remote)),
        &d.missing_there,
        r.engine().schema(),
    );
    let written = r.write(ops)?.len();
    drop(r);
    shared.changed();
    Ok(Repair {
        written,
        not_repairable,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Backoff between reconnection attempts: 250 ms doubling, capped at 30 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
}

/// One request and its answer over a link; pings from the remote are answered meanwhile.
async fn ask(
    link: &mut dyn Link,
    decoder: &mut FrameDecoder,
    encoder: &mut Encoder,
    wire: &mut u64,
    name: &str,
    msg: &Message,
) -> Result<Message, NetError> {
    let proto = |reason: String| NetError::Protocol {
        transport: name.to_string(),
        reason,
    };
    let io = |source| NetError::Io {
        transport: name.to_string(),
        source,
    };
    let (frame, _) = encoder.encode(msg).map_err(|e| proto(e.to_string()))?;
    *wire += frame.len() as u64;
    link.queue(frame);
    let answer = async {
        let mut buf = Vec::new();
        loop {
            if let Some(m) = decoder.next_message().map_err(|e| proto(e.to_string()))? {
                match m {
                    Message::Error(reason) => {
                        return Err(proto(format!("the remote said: {reason}")))
                    }
                    // The remote measures the link too: answer, and keep waiting.
                    Message::Ping(n) => {
                        let (frame, _) = encoder
                            .encode(&Message::Pong(n))
                            .map_err(|e| proto(e.to_string()))?;
                        *wire += frame.len() as u64;
                        link.queue(frame);
                        continue;
                    }
                    Message::Pong(_) => continue,
                    m => return Ok(m),
                }
            }
            buf.clear();
            if let Progress::Received(n) = link::io(link, &mut buf).await.map_err(io)? {
                *wire += n as u64;
                decoder.push(&buf);
            }
        }
    };
    // Writing and reading share one deadline: a remote that stops reading or answering
    // cannot keep this waiting.
    tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .map_err(|_| NetError::Timeout {
            transport: name.to_string(),
            secs: 60,
        })?
}

/// Live sync with every remote at once, reconnecting with backoff, until `opts.stop` is
/// set (or `opts.cancel` cancelled) or a remote refuses us. Returns the permanent errors.
///
/// Blocking: runs on a tokio runtime of its own, so it must not be called from inside one
/// (use [`watch_async`] there).
pub fn watch<E, G>(
    shared: Arc<Shared<E, G>>,
    urls: &[String],
    config: SessionConfig,
    opts: DriveOptions,
) -> Vec<NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            cancel_on(opts.stop.clone(), opts.cancel.clone());
            let errors = watch_async(&shared, urls, config, opts.clone()).await;
            opts.cancel.cancel();
            errors
        })
}

/// [`watch`] for async code: every remote's session on this task, the replica's work
/// inline (a client has few sessions). Stops when `opts.cancel` is cancelled (`opts.stop`
/// is not looked at here).
pub async fn watch_async<E, G>(
    shared: &Shared<E, G>,
    urls: &[String],
    config: SessionConfig,
    opts: DriveOptions,
) -> Vec<NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    if let Some(endpoint) = &opts.tx {
        endpoint.start(opts.cancel.clone());
    }
    let all = urls
        .iter()
        .map(|url| watch_one(shared, url, config.clone(), opts.clone()));
    futures_util::future::join_all(all)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn watch_one<E, G>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    opts: DriveOptions,
) -> Option<NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let mut backoff = Backoff::default();
    let stopped = || opts.cancel.is_cancelled() || opts.stop.load(Ordering::SeqCst);
    while !stopped() {
        let began = Instant::now();
        let result = tokio::select! {
            r = one_session(shared, url, config.clone(), &opts) => r,
            _ = opts.cancel.cancelled() => return None,
        };
        let error = match result {
            Ok(_) if stopped() => return None,
            Ok(_) => "the remote closed the session".to_string(),
            Err(e) if e.is_permanent() => return Some(e),
            Err(e) => e.to_string(),
        };
        // A session that lived a while was a working link: start the backoff over.
        if began.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        (opts.events)(
            url,
            &Lifecycle::Error {
                reason: format!("{error}; reconnecting in {} ms", delay.as_millis()),
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = opts.cancel.cancelled() => return None,
        }
    }
    None
}

/// A hub's server session: the replica's work on its writer thread, the handshake
/// deadline counted from `started` (the connection's accept).
pub(crate) async fn drive_hub_session<E, G>(
    link: &mut dyn Link,
    session: Session,
    shared: &Arc<Shared<E, G>>,
    opts: &DriveOptions,
    started: Instant,
) -> Result<SessionReport, NetError>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    drive_with(link, session, Access::Writer(shared), opts, started).await
}
