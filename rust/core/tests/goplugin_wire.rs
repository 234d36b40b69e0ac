//! Dkron's processor wire format, against bytes Go's own encoding/gob produced for Dkron's
//! v4.0.5 types (tests/data/goplugin/*.hex, written by tests/go/cmd/gobvectors, which
//! tests/test_gob_vectors.py runs to check them), and the yamux client against a socket we play
//! the plugin's side on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dkron_exec_core::plugin::goplugin::gob::{self, Decoder, DkronExecution, Encoder, Timestamp, Value};
use dkron_exec_core::plugin::goplugin::yamux::{self, Session};
use dkron_exec_core::plugin::goplugin::{looks_like_handshake, parse_handshake, Handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bytes of an `xxd` dump.
fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goplugin").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let hex = line.split_once(": ").unwrap().1.split("  ").next().unwrap();
        for group in hex.split_whitespace() {
            for i in (0..group.len()).step_by(2) {
                out.push(u8::from_str_radix(&group[i..i + 2], 16).unwrap());
            }
        }
    }
    out
}

fn the_execution() -> DkronExecution {
    let ts = Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 };
    DkronExecution {
        job_name: "job1".into(),
        success: true,
        output: b"hello\n".to_vec(),
        node_name: "node1".into(),
        group: 1_700_000_000_123_456_789,
        attempt: 1,
        started_at: Some(ts),
        finished_at: Some(ts),
    }
}

fn config() -> BTreeMap<String, String> {
    BTreeMap::from([("forward".to_string(), "true".to_string())])
}

/// Splits a byte string into gob messages (length-prefixed) and decodes the values.
fn decode_all(bytes: &[u8]) -> Vec<Value> {
    let mut dec = Decoder::default();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let first = bytes[pos];
        let (len, skip) = if first < 128 {
            (first as usize, 1)
        } else {
            let n = 256 - first as usize;
            (bytes[pos + 1..pos + 1 + n].iter().fold(0usize, |v, b| (v << 8) | *b as usize), 1 + n)
        };
        pos += skip;
        if let Some(v) = dec.message(&bytes[pos..pos + len]).unwrap() {
            out.push(v);
        }
        pos += len;
    }
    out
}

#[test]
fn process_requests_encode_exactly_as_go_does() {
    let mut enc = Encoder::default();
    let mut first = Vec::new();
    enc.request(&mut first, "Plugin.Process", 0);
    enc.processor_args(&mut first, &the_execution(), &config());
    assert_eq!(first, vector("call1.req.hex"));
    // The second call on the same stream carries no type definitions.
    let mut second = Vec::new();
    enc.request(&mut second, "Plugin.Process", 1);
    enc.processor_args(&mut second, &the_execution(), &config());
    assert_eq!(second, vector("call2.req.hex"));
}

#[test]
fn control_requests_encode_exactly_as_go_does() {
    let mut enc = Encoder::default();
    let mut out = Vec::new();
    enc.request(&mut out, "Dispenser.Dispense", 0);
    enc.string(&mut out, "processor");
    enc.request(&mut out, "Control.Quit", 1);
    enc.bool(&mut out, true);
    assert_eq!(out, vector("control.req.hex"));
}

#[test]
fn a_process_reply_decodes_to_the_execution() {
    let values = decode_all(&vector("call1.resp.hex"));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0].field("ServiceMethod").and_then(Value::as_str).as_deref(), Some("Plugin.Process"));
    assert_eq!(values[0].field("Seq"), None, "a zero Seq is left out");
    assert_eq!(gob::execution_of(values[1].clone()).unwrap(), the_execution());
}

#[test]
fn control_replies_decode() {
    let values = decode_all(&vector("control.resp.hex"));
    assert_eq!(values.len(), 4);
    assert_eq!(values[1].as_i64(), Some(1), "Dispense's broker id");
    assert_eq!(values[2].field("Seq").and_then(Value::as_i64), Some(1));
    assert_eq!(values[3], Value::Struct(vec![]), "Quit's struct{{}}");
}

#[test]
fn our_decoder_reads_gos_requests_and_our_encoder_round_trips() {
    let mut both = vector("call1.req.hex");
    both.extend(vector("call2.req.hex"));
    let values = decode_all(&both);
    assert_eq!(values.len(), 4);
    let args = &values[3];
    assert_eq!(gob::execution_of(args.field("Execution").unwrap().clone()).unwrap(), the_execution());
    let Some(Value::Map(cfg)) = args.field("Config") else { panic!("no config in {args:?}") };
    assert_eq!(cfg, &vec![(Value::Bytes(b"forward".to_vec()), Value::Bytes(b"true".to_vec()))]);

    // Zero values are left out and come back as zero; negative times survive.
    let odd = DkronExecution {
        job_name: "j".into(),
        started_at: Some(Timestamp::from_ns(-1_500_000_000)),
        output: vec![0, 255, 10],
        ..Default::default()
    };
    let mut enc = Encoder::default();
    let mut out = Vec::new();
    enc.processor_args(&mut out, &odd, &BTreeMap::new());
    let back = decode_all(&out);
    assert_eq!(gob::execution_of(back[0].field("Execution").unwrap().clone()).unwrap(), odd);
    assert_eq!(Timestamp::from_ns(-1_500_000_000), Timestamp { seconds: -2, nanos: 500_000_000 });
    assert_eq!(Timestamp::from_ns(-1_500_000_000).to_ns(), -1_500_000_000);
}

#[test]
fn handshake_lines_parse_as_go_plugins_client_does() {
    let hs = parse_handshake("1|1|unix|/tmp/plugin123|netrpc|\n").unwrap();
    assert_eq!(hs, Handshake { network: "unix".into(), address: "/tmp/plugin123".into(), protocol: "netrpc".into() });
    assert_eq!(parse_handshake("1|1|unix|/tmp/p").unwrap().protocol, "netrpc", "a missing protocol means netrpc");
    assert_eq!(parse_handshake("1|1|unix|/tmp/p|grpc|").unwrap().protocol, "grpc");
    assert!(looks_like_handshake("1|one|garbage") && looks_like_handshake("12|"));
    assert!(!looks_like_handshake("a|b") && !looks_like_handshake("|1") && !looks_like_handshake("hello"));
    for bad in ["not|a|handshake", "2|1|unix|/tmp/p|netrpc|", "1|2|unix|/tmp/p|netrpc|", "1|1|tcp|127.0.0.1:1|netrpc|", "1|1|unix|/p|soap|"] {
        assert!(parse_handshake(bad).is_err(), "{bad}");
    }
}

async fn read_frame(s: &mut tokio::net::UnixStream) -> ([u8; 12], Vec<u8>) {
    let mut h = [0u8; 12];
    s.read_exact(&mut h).await.unwrap();
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut body = vec![0u8; if h[1] == yamux::DATA { len } else { 0 }];
    s.read_exact(&mut body).await.unwrap();
    (h, body)
}

#[tokio::test]
async fn yamux_client_opens_streams_respects_windows_and_answers_pings() {
    let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let session = Session::start(ours, move |e| {
        let _ = ended_tx.send(e);
    })
    .unwrap();
    let mut a = session.open().unwrap();
    let b = session.open().unwrap();
    // Streams open with a window update carrying SYN, on odd ids in order.
    assert_eq!(read_frame(&mut theirs).await.0, yamux::header(yamux::WINDOW_UPDATE, yamux::SYN, 1, 0));
    assert_eq!(read_frame(&mut theirs).await.0, yamux::header(yamux::WINDOW_UPDATE, yamux::SYN, 3, 0));

    // A ping with SYN is answered with ACK and the same opaque value.
    theirs.write_all(&yamux::header(yamux::PING, yamux::SYN, 0, 77)).await.unwrap();
    assert_eq!(read_frame(&mut theirs).await.0, yamux::header(yamux::PING, yamux::ACK, 0, 77));

    // Data for stream 1 is delivered, and its window handed back once half of it is used.
    theirs.write_all(&yamux::header(yamux::DATA, yamux::ACK, 1, 5)).await.unwrap();
    theirs.write_all(b"hello").await.unwrap();
    assert_eq!(a.read_exact(5).await.unwrap(), b"hello");
    let half = yamux::INITIAL_WINDOW / 2;
    theirs.write_all(&yamux::header(yamux::DATA, 0, 1, half)).await.unwrap();
    theirs.write_all(&vec![1u8; half as usize]).await.unwrap();
    assert_eq!(a.read_exact(half as usize).await.unwrap().len(), half as usize);
    assert_eq!(read_frame(&mut theirs).await.0, yamux::header(yamux::WINDOW_UPDATE, 0, 1, half + 5));

    // A write larger than the window stops at the window until the peer grants more.
    let big = vec![7u8; yamux::INITIAL_WINDOW as usize + 1000];
    let writer = tokio::spawn(async move {
        b.write_all(&big).await.unwrap();
        b
    });
    let mut got = 0;
    while got < yamux::INITIAL_WINDOW as usize {
        let (h, body) = read_frame(&mut theirs).await;
        assert_eq!(h[1], yamux::DATA);
        got += body.len();
    }
    assert_eq!(got, yamux::INITIAL_WINDOW as usize, "never more than the window");
    let quiet = tokio::time::timeout(Duration::from_millis(200), read_frame(&mut theirs)).await;
    assert!(quiet.is_err(), "nothing beyond the window before an update");
    theirs.write_all(&yamux::header(yamux::WINDOW_UPDATE, 0, 3, 4096)).await.unwrap();
    let (h, body) = read_frame(&mut theirs).await;
    assert_eq!((h[1], body.len()), (yamux::DATA, 1000));
    writer.await.unwrap();

    // FIN ends the stream for its reader; the socket closing ends the session.
    theirs.write_all(&yamux::header(yamux::DATA, yamux::FIN, 1, 0)).await.unwrap();
    assert!(a.read_chunk().await.is_none());
    drop(theirs);
    assert_eq!(ended_rx.await.unwrap(), None);
    assert!(session.open().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_frames_the_socket_cannot_take_at_once_go_out_later_in_order() {
    let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
    let session = Session::start(ours, |_| {}).unwrap();
    let stream = session.open().unwrap();
    assert_eq!(read_frame(&mut theirs).await.0, yamux::header(yamux::WINDOW_UPDATE, yamux::SYN, 1, 0));
    // A window far beyond the socket's buffer: with the reader slow, writes must queue, and the
    // writer task drains the queue while the sender (a thread of its own, as a caller is) goes on.
    let total: usize = 8 << 20;
    theirs.write_all(&yamux::header(yamux::WINDOW_UPDATE, 0, 1, total as u32)).await.unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let runtime = tokio::runtime::Handle::current();
    let sender = std::thread::spawn(move || {
        for piece in data.chunks(4000) {
            runtime.block_on(stream.write_all(piece)).unwrap();
            std::thread::yield_now();
        }
    });
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        let (h, body) = read_frame(&mut theirs).await;
        assert_eq!((h[1], u32::from_be_bytes([h[4], h[5], h[6], h[7]])), (yamux::DATA, 1));
        got.extend_from_slice(&body);
        tokio::task::yield_now().await;
    }
    assert!(got == expected, "the bytes arrive whole and in order");
    sender.join().unwrap();
}
