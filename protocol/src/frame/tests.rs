use super::*;
use kuzu_sync_engine::sync::{Hello, Message};
use kuzu_sync_engine::{Event, EventId, Hlc, Op, PeerId, Value, VersionVector};
use proptest::prelude::*;

fn events(n: u64) -> Vec<Event> {
    let peer = PeerId::new("a").unwrap();
    (1..=n)
        .map(|c| Event {
            id: EventId {
                peer: peer.clone(),
                counter: c,
            },
            deps: [(peer.clone(), c - 1)].into_iter().collect(),
            hlc: Hlc {
                wall_ms: 1000 + c,
                logical: 0,
            },
            op: Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("name".into(), Value::String(format!("user-{c}"))),
                    ("age".into(), Value::Int64(c as i64 % 90)),
                ],
            },
        })
        .collect()
}

fn hello() -> Message {
    Message::Hello(Hello {
        peer: "a".into(),
        protocol_version: "1.0".into(),
        schema_version: 1,
        capabilities: vec!["zstd".into()],
        auth_token: Some("t".into()),
        version_vector: VersionVector::new(),
        sync_point: None,
        compacted: Default::default(),
    })
}

#[test]
fn round_trip_plain_and_compressed() {
    for compress in [false, true] {
        let enc = Encoder {
            compress,
            ..Encoder::default()
        };
        for msg in [hello(), Message::Events(events(500)), Message::Eose] {
            let (frame, stats) = enc.encode(&msg).unwrap();
            assert_eq!(stats.wire, frame.len());
            match decode_frame(&frame, DEFAULT_MAX_FRAME).unwrap() {
                Decoded::Message(m, used) => {
                    assert_eq!(*m, msg);
                    assert_eq!(used, frame.len());
                }
                other => panic!("{other:?}"),
            }
            if compress && matches!(msg, Message::Events(_)) {
                assert_eq!(frame[4], 1, "a large frame is compressed");
                // The C library at level 3 takes these 500 events to under a quarter;
                // ruzstd's fastest level (the WASM build) to 30 % (34,134 → 10,385 bytes).
                let ratio = if cfg!(feature = "zstd-c") { 4 } else { 3 };
                assert!(stats.wire * ratio < stats.raw, "{stats:?}");
            }
        }
    }
}

#[test]
fn every_prefix_needs_more_and_the_stream_decoder_reassembles() {
    let enc = Encoder {
        compress: true,
        ..Encoder::default()
    };
    let msgs = [hello(), Message::Events(events(50)), Message::Eose];
    let mut stream = Vec::new();
    for m in &msgs {
        stream.extend(enc.encode(m).unwrap().0);
    }
    let (first, _) = enc.encode(&msgs[0]).unwrap();
    for cut in 0..first.len() {
        assert!(matches!(
            decode_frame(&first[..cut], DEFAULT_MAX_FRAME),
            Ok(Decoded::NeedMore(_))
        ));
    }
    // Byte by byte through the stream decoder.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut got = Vec::new();
    for b in &stream {
        dec.push(std::slice::from_ref(b));
        while let Some(m) = dec.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, msgs);
    assert_eq!(dec.pending(), 0);
}

#[test]
fn bad_frames_are_named() {
    let max = 1024;
    let over = [0u8, 8, 0, 0, 0];
    assert_eq!(
        decode_frame(&over, max),
        Err(FrameError::TooLarge { len: 2048, max })
    );
    assert_eq!(decode_frame(&[0, 0, 0, 0], max), Err(FrameError::Empty));
    assert_eq!(
        decode_frame(&[2, 0, 0, 0, 0x80, 1], max),
        Err(FrameError::BadFlags(0x80))
    );
    assert!(matches!(
        decode_frame(&[4, 0, 0, 0, 1, 1, 2, 3], max),
        Err(FrameError::Decompress(_))
    ));
    // Garbage MessagePack.
    assert!(matches!(
        decode_frame(&[3, 0, 0, 0, 0, 0xc1, 0xc1], max),
        Err(FrameError::Decode(_))
    ));
    // A well-formed message of a type this version does not know.
    #[derive(serde::Serialize)]
    enum Future {
        #[allow(dead_code)]
        Hello(u8),
        Teleport(u32),
    }
    let body = rmp_serde::to_vec(&Future::Teleport(7)).unwrap();
    let mut frame = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    frame.push(0);
    frame.extend(body);
    match decode_frame(&frame, max) {
        Err(FrameError::UnknownMessage(m)) => {
            assert!(m.contains("teleport") || m.contains("Teleport"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The encoder refuses to make a frame over the limit.
    let small = Encoder {
        max_frame: 100,
        ..Encoder::default()
    };
    assert!(matches!(
        small.encode(&Message::Events(events(10))),
        Err(FrameError::TooLarge { max: 100, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bodies inside valid headers (a random 4-byte length is almost never valid,
    /// so arbitrary bytes alone nearly always stop at the length check): the decoder
    /// answers a message that re-encodes to exactly the body it came from, or an error;
    /// never a panic, and never more bytes than the frame.
    #[test]
    fn random_bodies_in_valid_headers(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        flags in prop_oneof![Just(0u8), Just(FLAG_ZSTD), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut frame = ((body.len() + 1) as u32).to_le_bytes().to_vec();
        frame.push(flags);
        frame.extend(&body);
        let whole = frame.len();
        frame.extend(&tail);
        match decode_frame(&frame, 4096) {
            Ok(Decoded::Message(m, used)) => {
                prop_assert_eq!(used, whole);
                prop_assert!(flags == 0 || flags == FLAG_ZSTD);
                // The decoded message is exactly what the body holds: decoding its own
                // encoding gives it back.
                let again = rmp_serde::to_vec(&*m).unwrap();
                prop_assert_eq!(decode_body(&again).unwrap(), *m);
            }
            Ok(Decoded::NeedMore(n)) => prop_assert!(false, "a whole frame asked for {} bytes", n),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Valid frames with random corruption: an error naming the problem, or a message:
    /// exactly the original if the (inflated) body is unchanged, else one that round-trips.
    #[test]
    fn corrupted_frames_decode_to_the_original_or_fail(
        n in 1u64..40,
        compress in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
    ) {
        let enc = Encoder { compress, ..Encoder::default() };
        let original = Message::Events(events(n));
        let (clean, _) = enc.encode(&original).unwrap();
        let mut frame = clean.clone();
        for (at, x) in flips {
            let i = at % frame.len();
            frame[i] ^= x;
        }
        match decode_frame(&frame, DEFAULT_MAX_FRAME) {
            Ok(Decoded::Message(m, used)) => {
                prop_assert!(used <= frame.len());
                if frame[..used] == clean[..used.min(clean.len())] && used == clean.len() {
                    prop_assert_eq!(&*m, &original);
                } else {
                    // The bytes changed: a different frame that happens to be valid.
                    let mut body_clean = clean[HEADER..].to_vec();
                    if clean[4] == FLAG_ZSTD {
                        body_clean = decompress(&body_clean, DEFAULT_MAX_FRAME).unwrap();
                    }
                    let mut body = frame[HEADER..used].to_vec();
                    if frame[4] == FLAG_ZSTD {
                        body = decompress(&body, DEFAULT_MAX_FRAME).unwrap();
                    }
                    // The same body decodes to the same message; a changed one may
                    // decode to another valid message (a flipped letter in a string),
                    // which must then encode back to a body that decodes to it.
                    if body == body_clean {
                        prop_assert_eq!(&*m, &original);
                    } else {
                        let again = rmp_serde::to_vec(&*m).unwrap();
                        prop_assert_eq!(decode_body(&again).unwrap(), *m);
                    }
                }
            }
            Ok(Decoded::NeedMore(need)) => prop_assert!(need > frame.len()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// A stream of valid frames with random garbage pushed in random chunk sizes: each
    /// frame decodes to its message, in order, until the garbage, which is an error.
    #[test]
    fn streams_split_anywhere(
        sizes in proptest::collection::vec(1u64..20, 1..6),
        chunk in 1usize..300,
        garbage in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let enc = Encoder { compress: true, threshold: 64, ..Encoder::default() };
        let msgs: Vec<Message> = sizes.iter().map(|&n| Message::Events(events(n))).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(enc.encode(m).unwrap().0);
        }
        stream.extend(&garbage);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        let mut failed = false;
        for piece in stream.chunks(chunk) {
            dec.push(piece);
            loop {
                match dec.next_message() {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => break,
                    Err(_) => { failed = true; break; }
                }
            }
            if failed { break; }
        }
        prop_assert!(got.len() >= msgs.len(), "{} of {} messages", got.len(), msgs.len());
        prop_assert_eq!(&got[..msgs.len()], &msgs[..]);
    }
}
