//! Running sync sessions over transports: the hub (many clients, any transport, one port)
//! and the client (one-shot or live, any number of remotes at once, reconnecting).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kuzu_sync_engine::antientropy::{self, EntityRow};
use kuzu_sync_engine::merkle::{self, MerkleError, MerkleRemote, Summary};
use kuzu_sync_engine::ports::{EventStore, GraphStore};
use kuzu_sync_engine::sync::{
    pack, unpack, Lifecycle, Message, NetworkQuality, Output, Session, SessionConfig,
    CAP_NO_EXCHANGE,
};
use kuzu_sync_engine::{Event, Op, Replica, ReplicaError, VersionVector};

use crate::frame::{Encoder, FrameDecoder, DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME};
use crate::transport::{TcpTransport, Transport};

/// A replica shared by sessions (and the application), with a change counter the sessions
/// watch to stream new events.
pub struct Shared<E: EventStore, G: GraphStore> {
    replica: Mutex<Replica<E, G>>,
    generation: AtomicU64,
}

impl<E: EventStore, G: GraphStore> std::fmt::Debug for Shared<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<E: EventStore, G: GraphStore> Shared<E, G> {
    pub fn new(replica: Replica<E, G>) -> Arc<Self> {
        Arc::new(Shared {
            replica: Mutex::new(replica),
            generation: AtomicU64::new(0),
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

    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
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

/// Receives lifecycle events: (the connection, e.g. `tcp://127.0.0.1:7000`, the event).
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
    /// How often to look for local changes while waiting for bytes.
    pub poll: Duration,
    pub max_frame: usize,
    pub stop: Arc<AtomicBool>,
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
}

impl std::fmt::Debug for DriveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveOptions")
            .field("one_shot", &self.one_shot)
            .field("poll", &self.poll)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            one_shot: false,
            poll: Duration::from_millis(20),
            max_frame: DEFAULT_MAX_FRAME,
            stop: Arc::new(AtomicBool::new(false)),
            events: no_events(),
            idle_timeout: None,
            frame_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(60),
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
    #[error("unsupported remote {0:?}: expected tcp://HOST:PORT, ws://HOST:PORT/PATH or http://HOST:PORT/PATH")]
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

/// Runs one session over `transport` until it closes, fails, is stopped, or (one-shot)
/// has synced. Then stores what the session learnt of the remote's events (see
/// `Replica::note_remote`).
pub fn drive<E: EventStore, G: GraphStore>(
    transport: &mut dyn Transport,
    session: Session,
    shared: &Shared<E, G>,
    opts: &DriveOptions,
) -> Result<SessionReport, NetError> {
    let result = drive_session(transport, session, shared, opts);
    let saved = shared.lock().save_known_peers();
    let report = result?;
    saved?;
    Ok(report)
}

fn drive_session<E: EventStore, G: GraphStore>(
    transport: &mut dyn Transport,
    mut session: Session,
    shared: &Shared<E, G>,
    opts: &DriveOptions,
) -> Result<SessionReport, NetError> {
    let name = transport.describe();
    let mut report = SessionReport {
        transport: name.clone(),
        ..SessionReport::default()
    };
    // Until the handshake completes, only small frames (see `HANDSHAKE_MAX_FRAME`).
    let mut decoder = FrameDecoder::new(opts.max_frame.min(HANDSHAKE_MAX_FRAME));
    let mut raised = false;
    let started = Instant::now();
    let mut encoder = Encoder {
        max_frame: opts.max_frame,
        ..Encoder::default()
    };
    let mut refused: Option<String> = None;
    let mut failed: Option<String> = None;
    let mut last_gen = shared.generation();
    let io_err = |source: io::Error| NetError::Io {
        transport: name.clone(),
        source,
    };
    let mut pending: Vec<Output> = Vec::new();
    if session.is_client() {
        pending = session.start(&*shared.lock());
    }
    let mut buf = Vec::with_capacity(64 << 10);
    let mut last_rx = Instant::now();
    let poll = transport.poll_interval().unwrap_or(opts.poll);
    let mut meter = Meter::default();
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
                    // The remote may already be gone after our error or refusal.
                    if let Err(e) = transport.send(&frame) {
                        if !session.is_closed() {
                            return Err(io_err(e));
                        }
                    }
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
                Output::Close => transport.close(),
                Output::Pong(nonce) => {
                    if let Some(q) = meter.pong(nonce) {
                        pending_after.extend(session.set_quality(q));
                    }
                }
            }
        }
        pending.append(&mut pending_after);
        report.remote = session.remote().unwrap_or_default().to_string();
        if session.is_closed() {
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
            report.common = shared.lock().version_vector().meet(session.remote_has());
            transport.close();
            return Ok(report);
        }
        if opts.stop.load(Ordering::SeqCst) {
            transport.close();
            return Ok(report);
        }
        // Write what is queued for a moment, then read: never block on writing alone.
        let flushed = transport.flush(Duration::from_millis(5)).map_err(&io_err)?;
        buf.clear();
        let wait = if flushed {
            poll
        } else {
            Duration::from_millis(1)
        };
        let n = match transport.recv(&mut buf, wait) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && session.is_established() => {
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
            Err(e) => return Err(io_err(e)),
        };
        if n > 0 {
            last_rx = Instant::now();
            report.wire_bytes_received += n as u64;
            decoder.push(&buf);
            loop {
                if session.is_established() && !raised {
                    raised = true;
                    decoder.set_max_frame(opts.max_frame);
                    transport.set_max_message(opts.max_frame + 4);
                }
                match decoder.next_message() {
                    Ok(Some(msg)) => {
                        let acked = matches!(msg, Message::Ack(_));
                        let outs = session.receive(msg, &mut shared.lock());
                        if outs
                            .iter()
                            .any(|o| matches!(o, Output::Event(Lifecycle::Change { .. })))
                        {
                            shared.changed();
                        }
                        // In order: what the message caused first, then what a new
                        // measure causes (batches must go out in the order they are made).
                        pending.extend(outs);
                        if acked {
                            if let Some(q) = meter.ack() {
                                pending.extend(session.set_quality(q));
                            }
                        }
                        if session.is_closed() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        pending.extend(session.protocol_error(e.to_string()));
                        break;
                    }
                }
            }
        } else if decoder.pending() > 0 && last_rx.elapsed() > opts.frame_timeout {
            pending.extend(session.protocol_error(format!(
                "truncated frame: {} bytes of an incomplete frame and nothing more for {} ms",
                decoder.pending(),
                opts.frame_timeout.as_millis()
            )));
            continue;
        } else if let Some(limit) = opts.idle_timeout {
            if last_rx.elapsed() > limit {
                transport.close();
                return Err(NetError::Timeout {
                    transport: name,
                    secs: limit.as_secs(),
                });
            }
        }
        if !session.is_client()
            && !session.is_established()
            && started.elapsed() > opts.handshake_timeout
        {
            pending.extend(session.protocol_error(format!(
                "no handshake within {} ms",
                opts.handshake_timeout.as_millis()
            )));
            continue;
        }
        if let Some(age) = meter.oldest_unanswered() {
            if age > opts.pong_timeout && !session.is_closed() {
                pending.extend(
                    session
                        .protocol_error(format!("no answer to a ping for {} ms", age.as_millis())),
                );
                continue;
            }
        }
        let g = shared.generation();
        // With long round trips, live changes are gathered for a second into one batch.
        let gather = session.strategy() == kuzu_sync_engine::sync::Strategy::BatchOptimized
            && meter.last_live.elapsed() < Duration::from_secs(1);
        if g != last_gen && pending.is_empty() && !session.is_closed() && !gather {
            last_gen = g;
            meter.last_live = Instant::now();
            pending.extend(session.local_changed(&*shared.lock()));
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

/// Opens a transport to a remote URL: `tcp://HOST:PORT`, `ws://HOST:PORT/PATH` or
/// `http://HOST:PORT/PATH`.
pub fn connect(url: &str, timeout: Duration) -> Result<Box<dyn Transport>, NetError> {
    let io = |source| NetError::Io {
        transport: url.to_string(),
        source,
    };
    if let Some(addr) = url.strip_prefix("tcp://") {
        Ok(Box::new(
            TcpTransport::connect(addr.trim_end_matches('/'), timeout).map_err(io)?,
        ))
    } else if url.starts_with("ws://") {
        Ok(Box::new(
            crate::ws::WsTransport::connect(url, timeout).map_err(io)?,
        ))
    } else if url.starts_with("http://") {
        Ok(Box::new(
            crate::http::HttpClientTransport::connect(url, timeout).map_err(io)?,
        ))
    } else {
        Err(NetError::BadUrl(url.to_string()))
    }
}

/// One-shot sync with one remote: handshake, exchange, EOSE, acks.
pub fn sync_once<E: EventStore, G: GraphStore>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    events: EventSink,
) -> Result<SessionReport, NetError> {
    let mut transport = connect(url, Duration::from_secs(10))?;
    let opts = DriveOptions {
        one_shot: true,
        events,
        idle_timeout: Some(Duration::from_secs(120)),
        ..DriveOptions::default()
    };
    let mut with_point = config.clone();
    with_point.sync_point = shared.lock().stored_sync_point(url)?;
    let mut report = drive(&mut *transport, Session::client(with_point), shared, &opts)?;
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
            let mut t = connect(url, Duration::from_secs(10))?;
            let again = drive(&mut *t, Session::client(config), shared, &opts)?;
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
pub fn sync_offline_changes<E: EventStore, G: GraphStore>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    events: EventSink,
) -> Result<OfflineSyncReport, NetError> {
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
/// answer.
struct NetRemote<'a> {
    transport: &'a mut dyn Transport,
    decoder: FrameDecoder,
    encoder: Encoder,
    summary: Summary,
    wire: u64,
    name: String,
}

impl NetRemote<'_> {
    fn ask(&mut self, msg: &Message) -> Result<Message, NetError> {
        let proto = |reason: String| NetError::Protocol {
            transport: self.name.clone(),
            reason,
        };
        let (frame, _) = self.encoder.encode(msg).map_err(|e| proto(e.to_string()))?;
        self.wire += frame.len() as u64;
        let io = |source| NetError::Io {
            transport: self.name.clone(),
            source,
        };
        self.transport.send(&frame).map_err(io)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let timeout = || NetError::Timeout {
            transport: self.name.clone(),
            secs: 60,
        };
        let mut buf = Vec::new();
        loop {
            // Flushing has the same deadline as the answer: a remote that stops reading
            // cannot keep this loop spinning.
            while !self.transport.flush(Duration::from_millis(5)).map_err(io)? {
                if Instant::now() > deadline {
                    return Err(timeout());
                }
            }
            if let Some(m) = self
                .decoder
                .next_message()
                .map_err(|e| proto(e.to_string()))?
            {
                match m {
                    Message::Error(reason) => {
                        return Err(proto(format!("the remote said: {reason}")))
                    }
                    // The remote measures the link too: answer, and keep waiting.
                    Message::Ping(n) => {
                        let (frame, _) = self
                            .encoder
                            .encode(&Message::Pong(n))
                            .map_err(|e| proto(e.to_string()))?;
                        self.wire += frame.len() as u64;
                        self.transport.send(&frame).map_err(io)?;
                        continue;
                    }
                    Message::Pong(_) => continue,
                    m => return Ok(m),
                }
            }
            if Instant::now() > deadline {
                return Err(NetError::Timeout {
                    transport: self.name.clone(),
                    secs: 60,
                });
            }
            buf.clear();
            let n = self
                .transport
                .recv(&mut buf, Duration::from_millis(50))
                .map_err(io)?;
            self.wire += n as u64;
            self.decoder.push(&buf);
        }
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
pub fn remote_diff<E: EventStore, G: GraphStore>(
    shared: &Shared<E, G>,
    url: &str,
    mut config: SessionConfig,
) -> Result<RemoteDiff, NetError> {
    let mut transport = connect(url, Duration::from_secs(10))?;
    let name = transport.describe();
    config.capabilities.push(CAP_NO_EXCHANGE.to_string());
    let mut session = Session::client(config);
    let mut remote = NetRemote {
        transport: &mut *transport,
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
    transport.close();
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

/// Live sync with every remote at once, each on its own thread, reconnecting with
/// backoff, until `stop` is set or a remote refuses us. Returns the permanent errors.
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
    let handles: Vec<_> = urls
        .iter()
        .map(|url| {
            let (shared, config, opts, url) =
                (shared.clone(), config.clone(), opts.clone(), url.clone());
            thread::spawn(move || watch_one(&shared, &url, config, opts))
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect()
}

fn watch_one<E: EventStore, G: GraphStore>(
    shared: &Shared<E, G>,
    url: &str,
    config: SessionConfig,
    opts: DriveOptions,
) -> Option<NetError> {
    let mut backoff = Backoff::default();
    while !opts.stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let result = connect(url, Duration::from_secs(10))
            .and_then(|mut t| drive(&mut *t, Session::client(config.clone()), shared, &opts));
        let error = match result {
            Ok(report) if opts.stop.load(Ordering::SeqCst) => {
                let _ = report;
                return None;
            }
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
        sleep_unless_stopped(delay, &opts.stop);
    }
    None
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}

/// Connections a hub serves at once by default (each is a thread today).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections past the cap that are answered with a refusal at once; more are dropped.
const MAX_REFUSING: usize = 16;

/// How a hub serves.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub session: SessionConfig,
    pub max_frame: usize,
    pub poll: Duration,
    /// See [`DriveOptions::frame_timeout`].
    pub frame_timeout: Duration,
    /// See [`DriveOptions::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// Connections served at once; a connection past it is refused (see [`serve`]).
    pub max_connections: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session: SessionConfig {
                seal: true,
                ..SessionConfig::default()
            },
            max_frame: DEFAULT_MAX_FRAME,
            poll: Duration::from_millis(20),
            frame_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves sessions on `listener` until `stop` is set: raw TCP frames, WebSocket
/// (`GET` upgrade) and HTTP push/pull (`POST`) on the same port. Each connection runs on
/// its own thread; one failing connection never affects the others. Past
/// `max_connections`, a new connection is answered with a refusal in its own protocol
/// (an `Error` frame, or HTTP 503) and closed.
pub fn serve<E, G>(
    listener: TcpListener,
    shared: Arc<Shared<E, G>>,
    config: HubConfig,
    stop: Arc<AtomicBool>,
    events: EventSink,
) -> io::Result<()>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let http = crate::http::HttpRegistry::default();
    let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
    let mut refusing: Vec<thread::JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if threads.len() >= config.max_connections {
                    threads.retain(|t| !t.is_finished());
                    refusing.retain(|t| !t.is_finished());
                }
                if threads.len() < config.max_connections {
                    let (shared, config, stop, events, http) = (
                        shared.clone(),
                        config.clone(),
                        stop.clone(),
                        events.clone(),
                        http.clone(),
                    );
                    threads.push(thread::spawn(move || {
                        serve_connection(stream, shared, config, stop, events, http)
                    }));
                    threads.retain(|t| !t.is_finished());
                } else if refusing.len() < MAX_REFUSING {
                    let max = config.max_connections;
                    refusing.push(thread::spawn(move || refuse_busy(stream, max)));
                }
                // Else dropped: closing is the only answer left that costs nothing.
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    http.shutdown();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve_connection<E, G>(
    stream: TcpStream,
    shared: Arc<Shared<E, G>>,
    config: HubConfig,
    stop: Arc<AtomicBool>,
    events: EventSink,
    http: crate::http::HttpRegistry,
) where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let report = |e: &dyn std::fmt::Display| {
        events(
            &format!("tcp://{addr}"),
            &Lifecycle::Error {
                reason: e.to_string(),
            },
        )
    };
    if let Err(e) = stream.set_nonblocking(false) {
        return report(&e);
    }
    let mut head = [0u8; 4];
    let _ = stream.set_read_timeout(Some(config.handshake_timeout));
    let sniffed = peek_exact(&stream, &mut head, config.handshake_timeout);
    let opts = DriveOptions {
        one_shot: false,
        poll: config.poll,
        max_frame: config.max_frame,
        stop: stop.clone(),
        events: events.clone(),
        idle_timeout: None,
        frame_timeout: config.frame_timeout,
        handshake_timeout: config.handshake_timeout,
        ..DriveOptions::default()
    };
    let session = || Session::server(config.session.clone());
    let mut transport: Box<dyn Transport> = match sniffed {
        Ok(()) if &head == b"GET " => match crate::ws::WsTransport::accept(stream) {
            Ok(t) => Box::new(t),
            Err(e) => return report(&e),
        },
        Ok(()) if &head == b"POST" => {
            let spawn = |mut t: Box<dyn Transport>| {
                let (shared, opts) = (shared.clone(), opts.clone());
                let s = session();
                thread::spawn(move || {
                    if let Err(e) = drive(&mut *t, s, &shared, &opts) {
                        (opts.events)(
                            &t.describe(),
                            &Lifecycle::Error {
                                reason: e.to_string(),
                            },
                        );
                    }
                });
            };
            if let Err(e) = http.handle(stream, &spawn) {
                report(&e);
            }
            return;
        }
        Ok(()) | Err(_) => match TcpTransport::from_stream(stream) {
            Ok(t) => Box::new(t),
            Err(e) => return report(&e),
        },
    };
    if let Err(e) = drive(&mut *transport, session(), &shared, &opts) {
        report(&e);
    }
}

/// Answers a connection past the cap in its own protocol, then closes it.
fn refuse_busy(stream: TcpStream, max: usize) {
    use std::io::Write;
    let reason = format!("the hub is serving its limit of {max} connections; try again later");
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 4];
    let sniffed = peek_exact(&stream, &mut head, Duration::from_secs(2));
    let mut stream = stream;
    let _ = match sniffed {
        Ok(()) if &head == b"GET " || &head == b"POST" => stream.write_all(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{reason}",
                reason.len()
            )
            .as_bytes(),
        ),
        _ => match Encoder::default().encode(&Message::Error(reason)) {
            Ok((frame, _)) => stream.write_all(&frame),
            Err(_) => Ok(()),
        },
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Waits until `buf.len()` bytes can be peeked (or the stream ends or times out).
fn peek_exact(stream: &TcpStream, buf: &mut [u8], limit: Duration) -> io::Result<()> {
    let start = Instant::now();
    loop {
        let n = stream.peek(buf)?;
        if n == buf.len() {
            return Ok(());
        }
        if n == 0 || start.elapsed() > limit {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the first frame",
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
}
