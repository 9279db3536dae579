//! Arbitrary bytes through the frame decoder, whole (`decode_frame`) and as a stream pushed
//! in chunks (`FrameDecoder`). Input: a control byte (frame limit and chunk sizes, see
//! `seeds::frame_limit`), then the stream.
//!
//! Checks: no panic; `NeedMore(n)` asks for more than the buffer holds and a message never
//! claims more bytes than there are; the stream yields the same messages and the same
//! first error whatever the chunking (as decoding frame by frame over the whole buffer);
//! every decoded message re-encodes (plain and compressed) to a frame that decodes to the
//! same message.
#![no_main]

use kuzu_sync_engine::sync::Message;
use kuzu_sync_fuzz::seeds::frame_limit;
use kuzu_sync_protocol::frame::{decode_frame, Decoded, Encoder, FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

fn round_trip(m: &Message) {
    for compress in [false, true] {
        let enc = Encoder {
            compress,
            threshold: 0,
            ..Encoder::default()
        };
        // Re-encoding can only fail by exceeding the frame limit.
        let Ok((bytes, _)) = enc.encode(m) else {
            continue;
        };
        match decode_frame(&bytes, enc.max_frame) {
            Ok(Decoded::Message(again, used)) => {
                assert_eq!(used, bytes.len(), "a re-encoded frame is taken whole");
                assert_eq!(
                    *again, *m,
                    "re-encoding changed the message (compress {compress})"
                );
            }
            other => panic!("a re-encoded {} does not decode: {other:?}", m.kind()),
        }
    }
}

/// Frame by frame over the whole buffer: the messages, then the error if one stopped it.
fn whole(buf: &[u8], max: usize) -> (Vec<Message>, Option<FrameError>) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode_frame(&buf[at..], max) {
            Ok(Decoded::Message(m, used)) => {
                assert!(
                    used >= 5 && used <= buf.len() - at,
                    "frame claims {used} bytes"
                );
                at += used;
                out.push(*m);
            }
            Ok(Decoded::NeedMore(n)) => {
                assert!(
                    n > buf.len() - at,
                    "NeedMore({n}) with {} bytes there",
                    buf.len() - at
                );
                return (out, None);
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let max = frame_limit(control);
    let (expected, expected_err) = whole(stream, max);
    for m in &expected {
        round_trip(m);
    }

    // The same bytes pushed in chunks of 1 to 64 bytes, sizes from a small LCG seeded by
    // the control byte.
    let mut dec = FrameDecoder::new(max);
    let mut got = Vec::new();
    let mut err = None;
    let mut state = u32::from(control) | 1;
    let mut at = 0;
    'feed: while at < stream.len() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((state >> 16) as usize % 64 + 1).min(stream.len() - at);
        dec.push(&stream[at..at + n]);
        at += n;
        loop {
            match dec.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(
        got, expected,
        "chunked decoding differs from whole-buffer decoding"
    );
    assert_eq!(err, expected_err, "chunked decoding fails differently");
    if err.is_none() {
        let consumed: usize = stream.len() - dec.pending();
        assert!(consumed <= stream.len());
    }
});
