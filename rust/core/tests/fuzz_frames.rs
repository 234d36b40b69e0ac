//! Fuzzing the plugin frame decoders (docs/PROTOCOL.md §3): byte streams of valid frames, the same
//! with bytes flipped, inserted, cut or length words set to their edges, and plain random bytes,
//! read by both decoders: `codec::read_frame` (async, the supervisor's) and `wire::FrameReader`
//! (over a real socketpair, the callers' and the SDK's), then read as a request and merged into an
//! execution as a host and a plugin would. Properties: nothing panics; both decoders give the same
//! frames and both end cleanly or both fail; an unmutated stream gives its frames back.
//!
//! Cases: 300 by default (CI); `FUZZ_CASES=1000000` for the long run (`scripts/fuzz-long.sh`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dkron_exec_core::execution::Execution;
use dkron_exec_core::plugin::codec::{self, CodecError, Frame, Read, Request};
use dkron_exec_core::plugin::wire::FrameReader;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

// ------------------------------------------------------------------------------------- inputs

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats that read back exactly: serde_json's default float parser (no `float_roundtrip`)
        // may miss the last bit of others, and nothing in the protocol is a float.
        prop::sample::select(vec![0.5, -1.25, 1e10, 3.0, -0.0, 1e-5]).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789+01:00", "bogus", ""])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((".{0,6}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A header as a peer might send it: a type, an id, an execution whose protocol fields hold any
/// JSON, a config, and keys nobody knows.
fn header() -> impl Strategy<Value = Map<String, Value>> {
    let field = prop::sample::select(vec![
        "id", "key", "job_name", "started_at", "finished_at", "success", "node_name", "group", "attempt",
        "exit_code", "error", "output_truncated", "output_size", "processor_errors", "unknown",
    ]);
    let execution = prop::collection::vec((field, json()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let kind = prop_oneof![
        prop::sample::select(vec!["process", "result", "execute", "hello", "cancel", "error", "log"]).prop_map(Value::from),
        json(),
    ];
    (kind, prop::option::of(json()), prop::option::of(execution), prop::option::of(json()), prop::collection::vec((".{0,5}", json()), 0..2))
        .prop_map(|(kind, id, execution, config, extra)| {
            let mut h: Map<String, Value> = extra.into_iter().collect();
            h.insert("type".into(), kind);
            for (key, value) in [("id", id), ("execution", execution), ("config", config)] {
                if let Some(v) = value {
                    h.insert(key.into(), v);
                }
            }
            h
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => prop::collection::vec(any::<u8>(), 0..64),
        // Larger than the reader's 64 KiB buffer: its separate-body path.
        1 => (65_000usize..140_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// A length word (at a frame start or 4 bytes in) set to an edge value.
    Word(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop::sample::select(vec![0u32, 1, 3, 4, 5, 7, 8, 100, 65_535, 65_536, 70_000, u32::MAX, 1 << 26, (1 << 26) + 1]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Mutation::Delete(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), edge).prop_map(|(at, w)| Mutation::Word(at, w)),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    frames: Vec<Frame>,
    mutations: Vec<Mutation>,
    /// Plain random bytes instead of frames.
    noise: Option<Vec<u8>>,
    max: usize,
}

fn case() -> impl Strategy<Value = Case> {
    let frames = prop::collection::vec((header(), body()).prop_map(|(h, b)| Frame::new(h, b)), 0..4);
    let max = prop::sample::select(vec![codec::MAX_FRAME, codec::MAX_FRAME, 50, 1000, 70_000]);
    let noise = prop_oneof![6 => Just(None), 1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some)];
    (frames, prop::collection::vec(mutation(), 0..4), noise, max).prop_map(|(frames, mutations, noise, max)| Case { frames, mutations, noise, max })
}

/// The stream's bytes, and the offsets at which its frames start.
fn encode(case: &Case) -> (Vec<u8>, Vec<usize>) {
    if let Some(noise) = &case.noise {
        return (noise.clone(), vec![0]);
    }
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for f in &case.frames {
        starts.push(out.len());
        out.extend(codec::encode(&f.header, &f.body, codec::MAX_FRAME).expect("a small frame encodes"));
    }
    (out, starts)
}

fn mutate(mut bytes: Vec<u8>, starts: &[usize], mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize| if bytes.is_empty() { 0 } else { i % (bytes.len() + 1) };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, b) => {
                let i = at(*i);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Word(i, w) => {
                let start = starts.get(i % starts.len().max(1)).copied().unwrap_or(0) + if i % 2 == 0 { 0 } else { 4 };
                if start + 4 <= bytes.len() {
                    bytes[start..start + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
        }
    }
    bytes
}

// ------------------------------------------------------------------------------------- decoders

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Failed,
}

fn by_read_frame(rt: &tokio::runtime::Runtime, bytes: &[u8], max: usize) -> (Vec<Frame>, End) {
    rt.block_on(async {
        let mut r = bytes;
        let mut frames = Vec::new();
        loop {
            match codec::read_frame(&mut r, max).await {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, End::Clean),
                Err(_) => return (frames, End::Failed),
            }
        }
    })
}

/// FrameReader on a real socket: the bytes go in without blocking as the reader drains them.
fn by_frame_reader(bytes: &[u8], max: usize) -> (Vec<Frame>, End) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair gave us these descriptors; each is owned once.
    let (tx, rx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut reader = FrameReader::new(max);
    let (mut sent, mut shut) = (0, false);
    let mut frames = Vec::new();
    loop {
        if sent < bytes.len() {
            let rest = &bytes[sent..];
            // SAFETY: rest is valid for reads of its length.
            let n = unsafe { libc::send(tx.as_raw_fd(), rest.as_ptr().cast(), rest.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n > 0 {
                sent += n as usize;
            }
        }
        if sent == bytes.len() && !shut {
            // SAFETY: a valid socket.
            unsafe { libc::shutdown(tx.as_raw_fd(), libc::SHUT_WR) };
            shut = true;
        }
        match reader.next_raw(rx.as_raw_fd(), libc::MSG_DONTWAIT) {
            Ok(Read::Frame(raw)) => {
                // The SDK's hot path reads the header as a Request; the host's as a map.
                let _ = serde_json::from_slice::<Request>(&raw.header).map(|req| {
                    if let Some(fields) = req.execution {
                        let _ = Execution::default().apply_protocol_fields(fields, Vec::new());
                    }
                });
                match raw.parse() {
                    Ok(frame) => frames.push(frame),
                    Err(_) => return (frames, End::Failed),
                }
            }
            Ok(Read::WouldBlock) => assert!(!shut || reader.has_buffered() || sent == bytes.len(), "stuck"),
            Ok(Read::Eof) => return (frames, End::Clean),
            Err(CodecError::Io(e)) => panic!("socket error: {e}"),
            Err(_) => return (frames, End::Failed),
        }
    }
}

fn check(rt: &tokio::runtime::Runtime, case: &Case) -> Result<(), TestCaseError> {
    let (clean, starts) = encode(case);
    let bytes = mutate(clean.clone(), &starts, &case.mutations);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let a = by_read_frame(rt, &bytes, case.max);
        let b = by_frame_reader(&bytes, case.max);
        for f in &a.0 {
            if let Some(Value::Object(fields)) = f.header.get("execution") {
                let _ = Execution::default().merge_protocol_fields(fields, f.body.clone());
            }
            let _ = (f.kind(), f.id(), f.str_field("error"));
        }
        (a, b)
    }));
    prop_assert!(outcome.is_ok(), "a decoder panicked");
    let (a, b) = outcome.unwrap();
    prop_assert_eq!(&a.0, &b.0, "the decoders disagree on the frames");
    prop_assert_eq!(&a.1, &b.1, "the decoders disagree on the end");
    // A valid frame: within max, and its header has a string "type" (§3).
    let valid = case.frames.iter().all(|f| f.header["type"].is_string() && codec::encode(&f.header, &f.body, case.max).is_ok());
    if bytes == clean && case.noise.is_none() && valid {
        prop_assert_eq!(&a.0, &case.frames, "a valid stream did not come back");
        prop_assert_eq!(a.1, End::Clean);
    }
    Ok(())
}

#[test]
fn frame_decoders_never_panic_and_agree() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    runner.run(&case(), |c| check(&rt, &c)).unwrap();
    eprintln!("fuzz_frames: {} inputs, 0 failures, {:.1?}", cases(), started.elapsed());
}
