//! Merkle anti-entropy against the `negentropy` crate, both counted in the bytes that would
//! cross the wire, and the cost curve of a diff as the set grows (n = 1k, 10k, 100k, 1M
//! entities at a fixed d = 10 differences). Run with
//! `cargo bench --profile dev -p kuzu-sync-protocol --bench merkle_wire`; it prints a
//! table and writes `docs/curves/merkle.svg`.
//!
//! ## The sets
//!
//! The remote is a real in-memory replica holding n entities (n − 1 `User` nodes and the
//! schema entity), answering through the engine's own server [`Session`]. The local side
//! is a [`MerkleIndex`] of the same entries with 10 differences: either 10 missing (the
//! SPEC case) or mixed (4 missing here, 3 missing there, 3 changed). Negentropy reconciles
//! the very same entries as `(timestamp 0, key ‖ digest)` items, the local side initiating.
//!
//! ## The counting rule
//!
//! **Ours**: every frame of the diff, both ways, every round trip, as `remote_diff`
//! (`protocol/src/net.rs`) sends them: `merkle_summary` and its reply, each
//! `merkle_descendants` / `merkle_hashes`, `merkle_fingerprints` /
//! `merkle_fingerprint_lists`, and `merkle_entries` / `merkle_entry_list`. Each message is
//! encoded by the crate's frame [`Encoder`] (MessagePack of `sync::Message` with its
//! variant name, the 5-byte header: u32 length + flags), decoded on the other side with
//! [`decode_frame`], and answered by the server session. A byte counted is a byte of a
//! frame. The asker's frames are not compressed (as in `remote_diff`); the answerer's are
//! compressed when the session negotiated zstd, which the default configuration does, and
//! the frame is then zstd's only if that is smaller (the table says how many were).
//!
//! **Negentropy**: each of its messages, both ways, every round trip, as the frame our
//! transport would make if it carried it in one more message variant holding bytes,
//! `negentropy(bin)`: 5-byte header + MessagePack `{"negentropy": bin}` (map, variant
//! name, `bin` length prefix, the message), compressed on the answerer's side by the same
//! rule as ours. The frame is computed by the encoder's rule (zstd level 3 when at least
//! 512 bytes and smaller), checked on every counted message to give exactly the crate's
//! [`Encoder`] frame of the same bytes as `Message::MerkleHashes`; the name is all that
//! differs (`negentropy` is 3 bytes shorter than `merkle_hashes`, in negentropy's favour).
//!
//! **Not counted, for either**: the handshake (`hello` / `welcome`) and fetching the
//! differing rows (`merkle_rows` / `merkle_row_list`): negentropy over our transport would
//! need the same. The table prints both for ours, apart.
//!
//! A round trip is one question and its answer. Ours include the summary. Times are in
//! process, both sides: ours with every frame encoded and decoded, negentropy's with every
//! frame sized (encoded and, for answers of 512 bytes or more, zstd tried), not decoded.
//! Not timed: index and storage building, and our handshake (a session answers one
//! summary, so each diff opens one).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::error::Error;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};
use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::merkle::{
    self, DiffReport, Entry, Fingerprint, Hash, Key, MerkleError, MerkleIndex, MerkleRemote,
    Summary,
};
use kuzu_sync_engine::sim::{base_schema, Rng};
use kuzu_sync_engine::sync::{
    pack, unpack, Message, Output, Session, SessionConfig, CAP_NO_EXCHANGE,
};
use kuzu_sync_engine::{FixedClock, MemoryEventStore, Op, PeerId, Replica, Value};
use kuzu_sync_protocol::codec;
use kuzu_sync_protocol::frame::{decode_frame, Decoded, Encoder, DEFAULT_MAX_FRAME};
use negentropy::{Id, Negentropy, NegentropyStorageVector};

type Memory = Replica<MemoryEventStore, MemoryGraphStore>;

/// The set sizes of the curve.
const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Differences between the two sides.
const D: usize = 10;

fn memory_replica(peer: &str) -> Memory {
    Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(peer).expect("a valid peer id"),
        Box::new(FixedClock(1_000)),
    )
    .expect("a memory replica")
}

/// A replica holding `n` entities: the schema and `n - 1` users.
fn remote_replica(n: u64) -> Memory {
    let mut hub = memory_replica("hub");
    hub.write(base_schema().into_iter().map(Op::Schema).collect())
        .expect("the schema");
    let mut id = 0i64;
    while (id as u64) < n - 1 {
        let chunk = (n - 1 - id as u64).min(50_000) as i64;
        let ops = (id..id + chunk)
            .map(|i| Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("id".into(), Value::Int64(i)),
                    ("name".into(), Value::from(format!("user {i}"))),
                ],
            })
            .collect();
        hub.write(ops).expect("users");
        id += chunk;
    }
    hub
}

/// Bytes and frames one way.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    frames: u32,
    bytes: u64,
    /// Frames whose body went zstd-compressed.
    compressed: u32,
}

impl Traffic {
    fn add(&mut self, bytes: usize, compressed: bool) {
        self.frames += 1;
        self.bytes += bytes as u64;
        self.compressed += u32::from(compressed);
    }

    fn since(self, before: Traffic) -> Traffic {
        Traffic {
            frames: self.frames - before.frames,
            bytes: self.bytes - before.bytes,
            compressed: self.compressed - before.compressed,
        }
    }
}

/// Whether the frame's flags say its body is compressed (see `frame.rs`'s layout).
fn is_compressed(frame: &[u8]) -> bool {
    frame[4] != 0
}

/// One direction of the wire: the crate's encoder in, its decoder out, every frame counted.
struct Wire {
    encoder: Encoder,
    traffic: Traffic,
}

impl Wire {
    fn new(compress: bool) -> Self {
        Wire {
            encoder: Encoder {
                compress,
                ..Encoder::default()
            },
            traffic: Traffic::default(),
        }
    }

    fn carry(&mut self, msg: &Message) -> Message {
        let (frame, _) = self.encoder.encode(msg).expect("under the frame limit");
        self.traffic.add(frame.len(), is_compressed(&frame));
        match decode_frame(&frame, DEFAULT_MAX_FRAME).expect("a valid frame") {
            Decoded::Message(m, used) if used == frame.len() => *m,
            other => panic!("the frame did not decode whole: {other:?}"),
        }
    }
}

fn sent(out: Vec<Output>) -> Message {
    let mut sends = out.into_iter().filter_map(|o| match o {
        Output::Send(m) => Some(m),
        _ => None,
    });
    let m = sends.next().expect("the session answers");
    assert!(sends.next().is_none(), "one answer per question");
    if let Message::Error(reason) = &m {
        panic!("the session refused: {reason}");
    }
    m
}

/// A diff session with the remote replica: the asker's side of `remote_diff`, in process.
struct DiffLink<'a> {
    hub: &'a RefCell<Memory>,
    server: Session,
    up: Wire,
    down: Wire,
    summary: Summary,
    round_trips: u32,
}

impl<'a> DiffLink<'a> {
    /// The handshake, as `remote_diff` makes it: a client session with `no-exchange`.
    fn open(hub: &'a RefCell<Memory>) -> Self {
        let mut asker = memory_replica("asker");
        let mut config = SessionConfig::default();
        config.capabilities.push(CAP_NO_EXCHANGE.into());
        let mut client = Session::client(config);
        let mut server = Session::server(SessionConfig::default());
        let mut up = Wire::new(false);
        let hello = up.carry(&sent(client.start(&asker)));
        let welcome = sent(server.receive(hello, &mut hub.borrow_mut()));
        let mut down = Wire::new(server.compression());
        let welcome = down.carry(&welcome);
        client.receive(welcome, &mut asker);
        assert!(client.is_established() && server.is_established());
        DiffLink {
            hub,
            server,
            up,
            down,
            summary: Summary {
                bucket_bits: 0,
                len: 0,
                root: [0; 32],
            },
            round_trips: 0,
        }
    }

    fn ask(&mut self, msg: Message) -> Message {
        let question = self.up.carry(&msg);
        let answer = sent(self.server.receive(question, &mut self.hub.borrow_mut()));
        self.round_trips += 1;
        self.down.encoder.compress = self.server.compression();
        self.down.carry(&answer)
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            frames: self.up.traffic.frames + self.down.traffic.frames,
            bytes: self.up.traffic.bytes + self.down.traffic.bytes,
            compressed: self.up.traffic.compressed + self.down.traffic.compressed,
        }
    }
}

fn malformed(what: &str) -> MerkleError {
    MerkleError::Malformed(format!("{what} of the wrong length"))
}

/// The same questions and answers as `NetRemote` in `protocol/src/net.rs`.
impl MerkleRemote for DiffLink<'_> {
    fn summary(&mut self) -> Result<Summary, MerkleError> {
        Ok(self.summary)
    }

    fn descendants(
        &mut self,
        level: u32,
        parents: &[u32],
        depth: u32,
    ) -> Result<Vec<Hash>, MerkleError> {
        match self.ask(Message::MerkleDescendants {
            level,
            parents: parents.to_vec(),
            depth,
        }) {
            Message::MerkleHashes(h) => unpack(&h).ok_or_else(|| malformed("hashes")),
            m => panic!("unexpected {}", m.kind()),
        }
    }

    fn fingerprints(&mut self, buckets: &[u32]) -> Result<Vec<Vec<Fingerprint>>, MerkleError> {
        match self.ask(Message::MerkleFingerprints(buckets.to_vec())) {
            Message::MerkleFingerprintLists(l) => l
                .iter()
                .map(|b| unpack(b).ok_or_else(|| malformed("fingerprints")))
                .collect(),
            m => panic!("unexpected {}", m.kind()),
        }
    }

    fn entries(&mut self, picks: &[(u32, u32)]) -> Result<Vec<Entry>, MerkleError> {
        match self.ask(Message::MerkleEntries(picks.to_vec())) {
            Message::MerkleEntryList(l) => Ok(unpack::<32>(&l)
                .ok_or_else(|| malformed("entries"))?
                .into_iter()
                .map(|b| {
                    let (k, d) = b.split_at(16);
                    (k.try_into().expect("16"), d.try_into().expect("16"))
                })
                .collect()),
            m => panic!("unexpected {}", m.kind()),
        }
    }
}

/// What one of our diffs found and cost.
struct Ours {
    report: DiffReport,
    /// The diff's frames, both ways: summary, walk, fingerprints, entries.
    diff: Traffic,
    round_trips: u32,
    handshake: Traffic,
    /// `merkle_rows` and its answer, for the rows that differ.
    rows: Traffic,
}

/// A diff of `local` against the replica over a session just opened, as `remote_diff`
/// runs it; the rows fetched too when `fetch_rows`.
fn our_diff(mut link: DiffLink, local: &MerkleIndex, fetch_rows: bool) -> Ours {
    let handshake = link.traffic();
    link.summary = match link.ask(Message::MerkleSummary {
        len: local.len() as u64,
    }) {
        Message::MerkleSummaryReply {
            bucket_bits,
            len,
            root,
        } => Summary {
            bucket_bits,
            len,
            root: root.try_into().expect("32 bytes"),
        },
        m => panic!("unexpected {}", m.kind()),
    };
    assert_eq!(link.summary.bucket_bits, local.bucket_bits(), "bucket bits");
    let report = merkle::diff(local, &mut link).expect("the diff succeeds");
    assert_eq!(link.round_trips, report.round_trips, "round trips");
    let diff = link.traffic().since(handshake);
    let mut rows = Traffic::default();
    if fetch_rows {
        let before = link.traffic();
        let wanted: Vec<Key> = report
            .missing_here
            .iter()
            .chain(&report.different)
            .copied()
            .collect();
        match link.ask(Message::MerkleRows(pack(&wanted))) {
            Message::MerkleRowList(r) => assert_eq!(r.len(), wanted.len(), "rows"),
            m => panic!("unexpected {}", m.kind()),
        }
        rows = link.traffic().since(before);
    }
    Ours {
        round_trips: link.round_trips - u32::from(fetch_rows),
        report,
        diff,
        handshake,
        rows,
    }
}

/// How our transport would carry a negentropy message: one more variant holding bytes.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Carried<'a> {
    Negentropy(#[serde(with = "serde_bytes")] &'a [u8]),
}

/// Zstd level of frames (`frame.rs`'s, private there; [`carried`] checks it).
const FRAME_ZSTD_LEVEL: i32 = 3;

/// The length of the frame the crate's [`Encoder`] makes of MessagePack `raw`, and whether
/// its body is compressed: [`Encoder::encode`]'s rule, which [`carried`] checks against it.
fn frame_len(encoder: &Encoder, raw: &[u8]) -> (usize, bool) {
    let header = frame_header();
    if encoder.compress && raw.len() >= encoder.threshold {
        let z = codec::compress(raw, FRAME_ZSTD_LEVEL);
        if z.len() < raw.len() {
            return (header + z.len(), true);
        }
    }
    (header + raw.len(), false)
}

/// The frame header's length, as the crate's encoder adds it.
fn frame_header() -> usize {
    let (frame, stats) = Encoder::default()
        .encode(&Message::Eose)
        .expect("a tiny frame");
    frame.len() - stats.raw
}

/// Counts negentropy message `m` as the frame our transport would make of it (see the
/// module doc). With `check`, first proves [`frame_len`] gives the crate's own encoder's
/// frame for the same bytes as `Message::MerkleHashes`; only the variant name differs.
fn carried(wire: &mut Traffic, encoder: &Encoder, m: &[u8], check: bool) {
    if check {
        let msg = Message::MerkleHashes(m.to_vec());
        let (frame, _) = encoder.encode(&msg).expect("under the frame limit");
        let raw = rmp_serde::to_vec(&msg).expect("encodes");
        assert_eq!(
            frame_len(encoder, &raw),
            (frame.len(), is_compressed(&frame)),
            "the framing rule is the encoder's"
        );
    }
    let raw = rmp_serde::to_vec(&Carried::Negentropy(m)).expect("encodes");
    let (len, compressed) = frame_len(encoder, &raw);
    wire.add(len, compressed);
}

/// What a negentropy reconciliation found and cost.
struct Neg {
    have: Vec<Id>,
    need: Vec<Id>,
    round_trips: u32,
    /// Its own encoded messages, both ways.
    raw: u64,
    /// Those messages framed as our transport would carry them.
    wire: Traffic,
}

/// The local side initiates; each round trip is one message to the remote and its answer.
fn negentropy_diff(
    local: &NegentropyStorageVector,
    remote: &NegentropyStorageVector,
    compress_answers: bool,
    check: bool,
) -> Neg {
    let up = Encoder::default();
    let down = Encoder {
        compress: compress_answers,
        ..Encoder::default()
    };
    let mut client = Negentropy::borrowed(local, 0).expect("no frame limit");
    let mut server = Negentropy::borrowed(remote, 0).expect("no frame limit");
    let mut neg = Neg {
        have: Vec::new(),
        need: Vec::new(),
        round_trips: 0,
        raw: 0,
        wire: Traffic::default(),
    };
    let mut query = client.initiate().expect("first message");
    loop {
        carried(&mut neg.wire, &up, &query, check);
        let answer = server.reconcile(&query).expect("server reconciles");
        carried(&mut neg.wire, &down, &answer, check);
        neg.round_trips += 1;
        neg.raw += (query.len() + answer.len()) as u64;
        match client
            .reconcile_with_ids(&answer, &mut neg.have, &mut neg.need)
            .expect("client reconciles")
        {
            Some(next) => query = next,
            None => return neg,
        }
    }
}

fn storage(entries: &[Entry]) -> NegentropyStorageVector {
    let mut storage = NegentropyStorageVector::with_capacity(entries.len());
    for (key, digest) in entries {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(key);
        id[16..].copy_from_slice(digest);
        storage
            .insert(0, Id::from_byte_array(id))
            .expect("unsealed storage");
    }
    storage.seal().expect("sealed once");
    storage
}

/// One scenario: the local entries and the differences the diff must find.
struct Case {
    name: String,
    n: u64,
    local: Vec<Entry>,
    missing_here: Vec<Key>,
    missing_there: Vec<Key>,
    different: Vec<Key>,
}

fn sorted(keys: impl Iterator<Item = Key>) -> Vec<Key> {
    let mut keys: Vec<Key> = keys.collect();
    keys.sort_unstable();
    keys
}

/// `count` distinct positions below `n`.
fn positions(rng: &mut Rng, n: usize, count: usize) -> Vec<usize> {
    let mut out = BTreeSet::new();
    while out.len() < count {
        out.insert(rng.below(n as u64) as usize);
    }
    out.into_iter().collect()
}

/// The local side lacks `D` of the remote's entities.
fn missing_case(remote: &[Entry]) -> Case {
    let n = remote.len() as u64;
    let gone = positions(&mut Rng::new(n), remote.len(), D);
    Case {
        name: format!("{}, {D} missing", label(n)),
        n,
        local: (0..remote.len())
            .filter(|i| gone.binary_search(i).is_err())
            .map(|i| remote[i])
            .collect(),
        missing_here: sorted(gone.iter().map(|&i| remote[i].0)),
        missing_there: Vec::new(),
        different: Vec::new(),
    }
}

/// The local side lacks 4 of the remote's entities, holds 3 it lacks and 3 changed.
fn mixed_case(remote: &[Entry]) -> Case {
    let n = remote.len() as u64;
    let picked = positions(&mut Rng::new(n + 1), remote.len(), 7);
    let (gone, changed) = picked.split_at(4);
    let mut local: Vec<Entry> = (0..remote.len())
        .filter(|i| gone.binary_search(i).is_err())
        .map(|i| {
            let (key, digest) = remote[i];
            if changed.contains(&i) {
                (key, merkle::digest(&[&digest[..], b"changed"].concat()))
            } else {
                (key, digest)
            }
        })
        .collect();
    let extra: Vec<Entry> = (0..3u8)
        .map(|i| {
            (
                merkle::key_hash(&[b"local only ", &[i][..]].concat()),
                merkle::digest(&[i]),
            )
        })
        .collect();
    local.extend(&extra);
    Case {
        name: format!("{}, {D} mixed", label(n)),
        n,
        local,
        missing_here: sorted(gone.iter().map(|&i| remote[i].0)),
        missing_there: sorted(extra.iter().map(|e| e.0)),
        different: sorted(changed.iter().map(|&i| remote[i].0)),
    }
}

fn label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n => format!("{}k", n / 1000),
    }
}

fn check(case: &Case, found: (&[Key], &[Key], &[Key]), who: &str) {
    assert_eq!(
        found.0, case.missing_here,
        "{who}, {}: missing here",
        case.name
    );
    assert_eq!(
        found.1, case.missing_there,
        "{who}, {}: missing there",
        case.name
    );
    assert_eq!(found.2, case.different, "{who}, {}: different", case.name);
}

/// Negentropy's ids sorted into our three lists.
fn negentropy_lists(neg: &Neg) -> (Vec<Key>, Vec<Key>, Vec<Key>) {
    let key = |id: &Id| -> Key { id[..16].try_into().expect("16 bytes") };
    let have: BTreeSet<Key> = neg.have.iter().map(key).collect();
    let need: BTreeSet<Key> = neg.need.iter().map(key).collect();
    (
        need.difference(&have).copied().collect(),
        have.difference(&need).copied().collect(),
        have.intersection(&need).copied().collect(),
    )
}

/// Mean wall time of `f` on what `setup` makes (not timed), over at least 3 runs and
/// about half a second of `f`.
fn mean_time<I, T>(mut setup: impl FnMut() -> I, mut f: impl FnMut(I) -> T) -> Duration {
    let mut spent = Duration::ZERO;
    let mut runs = 0u32;
    while runs < 3 || spent < Duration::from_millis(500) {
        let input = setup();
        let start = Instant::now();
        black_box(f(input));
        spent += start.elapsed();
        runs += 1;
    }
    spent / runs
}

/// One row of the table.
struct Row {
    case: String,
    n: u64,
    missing: bool,
    ours: Ours,
    ours_time: Duration,
    neg: Neg,
    neg_time: Duration,
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .configure_from_args();

    let mut rows = Vec::new();
    for n in SIZES {
        let started = Instant::now();
        let mut replica = remote_replica(n);
        let (entities, index) = replica.merkle(merkle::suggested_bucket_bits);
        let remote: Vec<Entry> = entities.iter().map(|r| r.entry()).collect();
        assert_eq!(remote.len() as u64, n, "entities");
        let bits = index.bucket_bits();
        drop((entities, index));
        let neg_remote = storage(&remote);
        eprintln!(
            "{}: replica of {n} entities built in {:.1?}, {bits} bucket bits",
            label(n),
            started.elapsed()
        );
        let hub = RefCell::new(replica);
        let compress = DiffLink::open(&hub).server.compression();

        let mut group = c.benchmark_group(format!("merkle_wire_{}", label(n)));
        for case in [missing_case(&remote), mixed_case(&remote)] {
            let local = MerkleIndex::build(case.local.clone(), bits);
            let ours = our_diff(DiffLink::open(&hub), &local, true);
            let r = &ours.report;
            check(
                &case,
                (&r.missing_here, &r.missing_there, &r.different),
                "ours",
            );
            let neg_local = storage(&case.local);
            let neg = negentropy_diff(&neg_local, &neg_remote, compress, true);
            let lists = negentropy_lists(&neg);
            check(&case, (&lists.0, &lists.1, &lists.2), "negentropy");

            group.bench_function(BenchmarkId::new("ours", &case.name), |b| {
                b.iter_batched(
                    || DiffLink::open(&hub),
                    |link| our_diff(link, &local, false),
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(BenchmarkId::new("negentropy", &case.name), |b| {
                b.iter(|| negentropy_diff(&neg_local, &neg_remote, compress, false))
            });
            rows.push(Row {
                missing: case.name.ends_with("missing"),
                n: case.n,
                ours,
                ours_time: mean_time(
                    || DiffLink::open(&hub),
                    |link| our_diff(link, &local, false),
                ),
                neg_time: mean_time(
                    || (),
                    |()| negentropy_diff(&neg_local, &neg_remote, compress, false),
                ),
                neg,
                case: case.name,
            });
        }
        group.finish();
    }
    c.final_summary();
    print_table(&rows);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/curves/merkle.svg");
    draw_curve(&rows, &path).expect("the curve is drawn");
    println!("curve written to {}", path.display());
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "Merkle diff at d = {D}: bytes that cross the wire (frames, both ways), ours vs negentropy"
    );
    println!(
        "{:<16} | {:>3} {:>7} {:>7} {:>4} {:>9} | {:>3} {:>7} {:>7} {:>4} {:>9} | {:>6} | {:>5} {:>5}",
        "case", "rt", "wire", "payload", "zstd", "time", "rt", "wire", "own", "zstd", "time",
        "ratio", "hshk", "rows"
    );
    for row in rows {
        let (o, neg) = (&row.ours, &row.neg);
        println!(
            "{:<16} | {:>3} {:>7} {:>7} {:>4} {:>9.2?} | {:>3} {:>7} {:>7} {:>4} {:>9.2?} | {:>6.3} | {:>5} {:>5}",
            row.case,
            o.round_trips,
            o.diff.bytes,
            o.report.bytes,
            o.diff.compressed,
            row.ours_time,
            neg.round_trips,
            neg.wire.bytes,
            neg.raw,
            neg.wire.compressed,
            row.neg_time,
            o.diff.bytes as f64 / neg.wire.bytes as f64,
            o.handshake.bytes,
            o.rows.bytes,
        );
    }
    println!(
        "(ours: round trips incl. the summary / frame bytes / the old payload-only count / \
         frames zstd-compressed / time;"
    );
    println!(
        " negentropy: round trips / frame bytes on our transport / its own message bytes / \
         frames compressed / time;"
    );
    println!(
        " ratio: our wire bytes over negentropy's; hshk, rows: our handshake and row fetch, \
         not counted for either)"
    );
    for row in rows {
        let o = &row.ours;
        println!(
            "{}: ours {} comparisons, {} entries compared, {} frames",
            row.case, o.report.comparisons, o.report.entries_compared, o.diff.frames
        );
    }
}

/// What a panel of the curve plots of a row: (ours, negentropy's).
type Measure = fn(&Row) -> (f64, f64);

/// Bytes and round trips vs n, the missing case, ours and negentropy's, side by side.
fn draw_curve(rows: &[Row], path: &std::path::Path) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;

    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    let points: Vec<&Row> = rows.iter().filter(|r| r.missing).collect();
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    let ours_color = RGBColor(31, 119, 180);
    let neg_color = RGBColor(214, 39, 40);
    let panels: [(_, &str, &str, Measure); 2] = [
        (
            left,
            "Merkle diff, 10 missing: bytes on the wire",
            "bytes, both ways (frames)",
            |r: &Row| (r.ours.diff.bytes as f64, r.neg.wire.bytes as f64),
        ),
        (
            right,
            "Merkle diff, 10 missing: round trips",
            "round trips",
            |r: &Row| (f64::from(r.ours.round_trips), f64::from(r.neg.round_trips)),
        ),
    ];
    for (area, title, y_desc, value) in panels {
        let top = points
            .iter()
            .map(|r| {
                let (a, b) = value(r);
                a.max(b)
            })
            .fold(0.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((700f64..1_500_000f64).log_scale(), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("n, entities (log scale)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| label(x.round() as u64))
            .y_label_formatter(&|y| format!("{}", y.round() as i64))
            .draw()?;
        for (name, color, pick) in [
            (
                "kuzu-sync Merkle",
                ours_color,
                (|(a, _)| a) as fn((f64, f64)) -> f64,
            ),
            ("negentropy", neg_color, |(_, b)| b),
        ] {
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|r| (r.n as f64, pick(value(r))))
                .collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)).point_size(4))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
