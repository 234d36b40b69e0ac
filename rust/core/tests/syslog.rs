//! The syslog sink against plain local receivers: formatting on the wire, framing, splitting,
//! connection reuse and reconnecting.

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dkron_exec_core::config::Config;
use dkron_exec_core::sinks::syslog::{ExecutionMessage, SendError, SyslogConfig, SyslogSink, FIELD_PREFIX};

fn sink(pairs: &[(&str, &str)]) -> SyslogSink {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SyslogSink::new(SyslogConfig::parse(&Config::new(&map, FIELD_PREFIX)).unwrap())
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn msg(output: &[u8], success: bool) -> ExecutionMessage<'_> {
    ExecutionMessage {
        job_name: "backup",
        key: "1700000000000000000-node1",
        success,
        exit_code: Some(if success { 0 } else { 2 }),
        output,
        timestamp_ns: now_ns(),
    }
}

fn recv_text(sock: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 1 << 20];
    let n = sock.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Reads octet-counted messages from a stream until `count` have arrived.
fn read_octets(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < count {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed after {} messages", out.len());
        data.extend_from_slice(&buf[..n]);
        while let Some(sp) = data.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
            if data.len() < sp + 1 + len {
                break;
            }
            out.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
            data.drain(..sp + 1 + len);
        }
    }
    out
}

fn read_lines(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    while data.iter().filter(|b| **b == b'\n').count() < count {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        data.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(data).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn unixgram_rfc3164_is_go_local_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap())]);
    assert_eq!(s.send(&msg(b"hello\nworld\n", true)).unwrap(), 1);
    let got = recv_text(&rx);
    let pid = std::process::id();
    // <PRI>Mmm _d hh:mm:ss TAG[PID]: MSG\n, PRI = cron(9) * 8 + info(6).
    assert!(got.starts_with("<78>") && got.ends_with(&format!(" dkron[{pid}]: hello\nworld\n")), "{got:?}");
    assert_eq!(got.len(), "<78>Jan  2 15:04:05 ".len() + format!("dkron[{pid}]: hello\nworld\n").len());
    s.send(&msg(b"boom", false)).unwrap();
    assert!(recv_text(&rx).starts_with("<75>"), "cron.err on failure");
}

#[test]
fn local_transport_finds_a_datagram_socket_at_a_given_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev-log");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("address", path.to_str().unwrap()), ("facility", "local3"), ("tag", "nightly")]);
    s.send(&msg(b"x", true)).unwrap();
    let got = recv_text(&rx);
    assert!(got.starts_with(&format!("<{}>", 19 * 8 + 6)) && got.contains(" nightly["), "{got}");
}

#[test]
fn local_transport_falls_back_to_a_stream_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let s = sink(&[("address", path.to_str().unwrap())]);
    s.send(&msg(b"one\ntwo\n", true)).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.matches('\n').count() < 2 {
        let n = conn.read(&mut buf).unwrap();
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    // LF framing: one message per line, so no line can end another message early.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with(": one") && lines[1].ends_with(": two"), "{lines:?}");
}

#[test]
fn tcp_octet_counting_keeps_newlines_and_reuses_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = sink(&[("transport", "tcp"), ("address", &addr), ("hostname", "web1")]);
    s.send(&msg(b"line 1\nline 2\n", true)).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    s.send(&msg(b"second", false)).unwrap();
    let got = read_octets(&mut conn, 2);
    let pid = std::process::id();
    assert!(got[0].starts_with("<78>1 ") && got[0].contains(&format!(" web1 dkron {pid} - [dkron@32473 ")), "{}", got[0]);
    assert!(got[0].ends_with("job=\"backup\" execution=\"1700000000000000000-node1\" success=\"true\" exit_code=\"0\"] \u{feff}line 1\nline 2"));
    assert!(got[1].starts_with("<75>1 ") && got[1].ends_with("success=\"false\" exit_code=\"2\"] \u{feff}second"));
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "one connection for both executions");
}

#[test]
fn tcp_lf_framing_sends_one_message_per_line() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = sink(&[("transport", "tcp"), ("address", &addr), ("framing", "lf"), ("format", "rfc3164")]);
    assert_eq!(s.send(&msg(b"a\nb\nc", true)).unwrap(), 3);
    let (mut conn, _) = listener.accept().unwrap();
    let lines = read_lines(&mut conn, 3);
    let host = &lines[0].split(' ').collect::<Vec<_>>();
    // Remote 3164 carries a host name: <PRI>Mmm _d hh:mm:ss HOST TAG[PID]: MSG
    assert!(host.len() >= 5, "{lines:?}");
    assert!(lines.iter().zip(["a", "b", "c"]).all(|(l, m)| l.ends_with(&format!("]: {m}"))), "{lines:?}");
}

#[test]
fn per_line_over_udp() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    let s = sink(&[("transport", "udp"), ("address", &addr), ("per_line", "true")]);
    assert_eq!(s.send(&msg(b"first\nsecond\n", true)).unwrap(), 2);
    let mut buf = [0u8; 65536];
    for want in ["first", "second"] {
        let n = rx.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<78>1 ") && got.ends_with(&format!("] \u{feff}{want}")), "{got}");
    }
}

#[test]
fn oversize_is_split_into_numbered_parts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap()), ("max_message", "1000")]);
    let output: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    let n = s.send(&msg(&output, true)).unwrap();
    assert_eq!(n, 4);
    let mut joined = Vec::new();
    for i in 1..=n {
        let got = recv_text(&rx);
        assert!(got.len() <= 1000, "{}", got.len());
        let marker = format!("(part {i}/{n}) ");
        let at = got.find(&marker).unwrap_or_else(|| panic!("{marker} in {got}"));
        joined.extend_from_slice(got[at + marker.len()..].trim_end_matches('\n').as_bytes());
    }
    assert_eq!(joined, output);
}

#[test]
fn oversize_can_be_truncated_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[
        ("transport", "unixgram"),
        ("address", path.to_str().unwrap()),
        ("max_message", "500"),
        ("oversize", "truncate"),
    ]);
    assert_eq!(s.send(&msg(&[b'z'; 5000], true)).unwrap(), 1);
    let got = recv_text(&rx);
    assert!(got.len() <= 500 && got.ends_with(" of 5000 bytes dropped]\n"), "{got}");
}

#[test]
fn datagram_too_large_for_the_kernel_is_split_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap()), ("max_message", "4000000")]);
    let output: Vec<u8> = (0..1_000_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    let reader = std::thread::spawn(move || {
        let mut parts = Vec::new();
        let mut buf = vec![0u8; 1 << 22];
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        loop {
            let n = rx.recv(&mut buf).unwrap();
            let text = String::from_utf8(buf[..n].to_vec()).unwrap();
            let done = text.contains("(part ") && {
                let p = &text[text.find("(part ").unwrap() + 6..];
                let (i, rest) = p.split_once('/').unwrap();
                i == rest.split_once(')').unwrap().0
            };
            parts.push(text);
            if done {
                return parts;
            }
        }
    });
    let sent = s.send(&msg(&output, true)).unwrap();
    let parts = reader.join().unwrap();
    assert_eq!(parts.len(), sent);
    assert!(s.budget() < 4_000_000 && s.budget() <= 212_992, "learned budget {}", s.budget());
    let body: String = parts.iter().map(|p| p[p.find(") ").unwrap() + 2..].trim_end_matches('\n')).collect::<Vec<_>>().concat();
    assert_eq!(body.as_bytes(), output.as_slice());
}

#[test]
fn tcp_reconnects_after_the_peer_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = sink(&[("transport", "tcp"), ("address", &addr)]);
    s.send(&msg(b"one", true)).unwrap();
    let (mut first, _) = listener.accept().unwrap();
    assert!(read_octets(&mut first, 1)[0].ends_with("] \u{feff}one"));
    drop(first); // the daemon restarts
    std::thread::sleep(Duration::from_millis(50));
    s.send(&msg(b"two", true)).unwrap();
    let (mut second, _) = listener.accept().unwrap();
    assert!(read_octets(&mut second, 1)[0].ends_with("] \u{feff}two"), "not lost in the dead connection");
}

#[test]
fn a_daemon_gone_is_an_error_and_coming_back_works() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let s = sink(&[("transport", "tcp"), ("address", &addr.to_string()), ("timeout", "500ms")]);
    s.send(&msg(b"one", true)).unwrap();
    let (first, _) = listener.accept().unwrap();
    drop(first);
    drop(listener);
    std::thread::sleep(Duration::from_millis(50));
    let err = s.send(&msg(b"two", true)).unwrap_err();
    assert!(matches!(err, SendError::Io { .. }), "{err}");
    assert!(err.to_string().contains(&format!("tcp:{addr}")), "{err}");
    assert!(!s.is_connected());
    let listener = TcpListener::bind(addr).unwrap();
    s.send(&msg(b"three", true)).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    assert!(read_octets(&mut conn, 1)[0].ends_with("] \u{feff}three"));
}

#[test]
fn unixgram_reconnects_to_a_restarted_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap())]);
    s.send(&msg(b"one", true)).unwrap();
    assert!(recv_text(&rx).ends_with(": one\n"));
    drop(rx);
    std::fs::remove_file(&path).unwrap();
    let err = s.send(&msg(b"lost", true)).unwrap_err();
    assert!(err.to_string().contains("unixgram:"), "{err}");
    let rx = UnixDatagram::bind(&path).unwrap();
    s.send(&msg(b"two", true)).unwrap();
    assert!(recv_text(&rx).ends_with(": two\n"));
}

#[test]
fn no_local_socket_is_an_error() {
    let s = sink(&[("address", "/nonexistent/dkron-exec-test.sock")]);
    let err = s.send(&msg(b"x", true)).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dkron-exec-test.sock"), "{err}");
}

#[test]
fn shared_by_threads_over_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = Arc::new(sink(&[("transport", "tcp"), ("address", &addr)]));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.send(&msg(format!("t{t} m{i}").as_bytes(), true)).unwrap();
                }
            })
        })
        .collect();
    let (mut conn, _) = listener.accept().unwrap();
    let got = read_octets(&mut conn, 200);
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|m| m.starts_with("<78>1 ")));
}

// -- the BOM (RFC 5424 section 6.4) ----------------------------------------------------------------

#[test]
fn rfc5424_utf8_message_starts_with_the_bom_and_other_bytes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap()), ("format", "rfc5424")]);
    let mut buf = vec![0u8; 65536];
    s.send(&msg("héllo".as_bytes(), true)).unwrap();
    let n = rx.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"exit_code=\"0\"] \xEF\xBB\xBFh\xC3\xA9llo"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s.send(&msg(b"bin\xff\xfe", true)).unwrap();
    let n = rx.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"exit_code=\"0\"] bin\xff\xfe"), "no BOM before bytes that are not UTF-8");
    let s = sink(&[("transport", "unixgram"), ("address", path.to_str().unwrap())]);
    s.send(&msg("héllo".as_bytes(), true)).unwrap();
    let n = rx.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b": h\xC3\xA9llo\n"), "RFC 3164 has no BOM");
}

// -- TCP: a daemon that accepts and drops ----------------------------------------------------------

/// Accepts connections and closes each one at once, without reading. Sends a token each time
/// it has closed every connection that was waiting: the client's connections are then all gone
/// (connect returns once the kernel queued the connection, before it is accepted).
fn accept_and_drop(listener: TcpListener) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut closed = false;
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    drop(conn);
                    closed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::mem::take(&mut closed) && tx.send(()).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    });
    rx
}

#[test]
fn tcp_accept_and_drop_is_reported_naming_the_executions() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let idle = accept_and_drop(listener);
    let s = sink(&[("transport", "tcp"), ("address", &addr)]);
    let keys: Vec<String> = (0..4).map(|i| format!("17000000000000000{i}-node1")).collect();
    let mut results = Vec::new();
    for key in &keys {
        let m = ExecutionMessage { key, ..msg(b"dropped", true) };
        results.push(s.send(&m));
        while idle.recv_timeout(Duration::from_millis(100)).is_ok() {} // every connection closed
    }
    let probe = ExecutionMessage { key: "probe", ..msg(b"probe", true) };
    results.push(s.send(&probe));
    let errors: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
    // Each execution failed itself (the drop was seen right after its write), or a later send
    // found its connection reset and named it: never a silent success.
    for (i, key) in keys.iter().enumerate() {
        let own = matches!(results[i], Err(SendError::Io { .. }));
        let named = results[i + 1..].iter().any(|r| match r {
            Err(SendError::Io { lost: Some(l), .. }) | Err(SendError::EarlierLost { lost: l, .. }) => l.keys.contains(key),
            _ => false,
        });
        assert!(own || named, "the loss of {key} is reported: {errors:?}");
    }
}

#[test]
fn tcp_a_graceful_close_after_reading_is_no_loss() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = sink(&[("transport", "tcp"), ("address", &addr)]);
    s.send(&msg(b"one", true)).unwrap();
    let (mut first, _) = listener.accept().unwrap();
    assert!(read_octets(&mut first, 1)[0].ends_with("one"));
    first.shutdown(std::net::Shutdown::Both).unwrap();
    drop(first);
    assert_eq!(s.send(&msg(b"two", true)).unwrap(), 1, "everything sent had been read");
    let (mut second, _) = listener.accept().unwrap();
    assert!(read_octets(&mut second, 1)[0].ends_with("two"));
}

// -- RELP --------------------------------------------------------------------------------------------

mod relp_frames {
    use dkron_exec_core::sinks::syslog::relp::{encode_frame, next_txnr, parse_frame, Answer, Frame, FrameError, MAX_ANSWER};

    fn frame(txnr: u32, command: &str, data: &[u8]) -> Frame {
        Frame { txnr, command: command.to_string(), data: data.to_vec() }
    }

    #[test]
    fn encodes_with_and_without_data() {
        assert_eq!(encode_frame(1, "syslog", b"<14>hi"), b"1 syslog 6 <14>hi\n");
        assert_eq!(encode_frame(7, "close", b""), b"7 close 0\n");
    }

    #[test]
    fn parses_answers_hints_and_several_frames() {
        let buf = b"2 rsp 6 200 OK\n3 rsp 0\n0 serverclose 0\n";
        let (f, used) = parse_frame(buf, MAX_ANSWER).unwrap().unwrap();
        assert_eq!((f, used), (frame(2, "rsp", b"200 OK"), 15));
        let (f, used2) = parse_frame(&buf[used..], MAX_ANSWER).unwrap().unwrap();
        assert_eq!(f, frame(3, "rsp", b""));
        let (f, _) = parse_frame(&buf[used + used2..], MAX_ANSWER).unwrap().unwrap();
        assert_eq!(f, frame(0, "serverclose", b""));
        // Data may hold LFs and spaces: DATALEN decides.
        let (f, _) = parse_frame(b"1 rsp 22 200 OK\ncommands=syslog\n", MAX_ANSWER).unwrap().unwrap();
        assert_eq!(f.data, b"200 OK\ncommands=syslog");
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more() {
        let whole = b"12 rsp 6 200 OK\n";
        for end in 0..whole.len() {
            assert_eq!(parse_frame(&whole[..end], MAX_ANSWER), Ok(None), "prefix {end}");
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad: &[(&[u8], &str)] = &[
            (b"x rsp 0\n", "TXNR"),
            (b" 1 rsp 0\n", "TXNR"),
            (b"1234567890 rsp 0\n", "TXNR"),
            (b"1 r5p 0\n", "COMMAND"),
            (b"1  0\n", "COMMAND"),
            (b"1 rsp x\n", "DATALEN"),
            (b"1 rsp 1234567890 ", "DATALEN"),
            (b"1 rsp 3:abc\n", "DATALEN"),
            (b"1 rsp 2 OKX", "trailer"),
            (b"1 rsp 0 \n", "trailer"),
        ];
        for (bytes, part) in bad {
            let err = parse_frame(bytes, MAX_ANSWER).expect_err(&String::from_utf8_lossy(bytes));
            assert!(err.to_string().contains(part), "{:?}: {err}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(parse_frame(format!("1 {} 0\n", "a".repeat(33)).as_bytes(), MAX_ANSWER), Err(FrameError::CommandTooLong));
        assert_eq!(parse_frame(b"1 rsp 100 ", 99), Err(FrameError::TooLong { datalen: 100, limit: 99 }));
    }

    #[test]
    fn answers_and_offers() {
        let a = Answer::parse(b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://x\ncommands=syslog").unwrap();
        assert!(a.is_ok());
        assert_eq!((a.code, a.text.as_str()), (200, "OK"));
        assert_eq!(a.offer("relp_version"), Some(vec!["0".to_string()]));
        assert_eq!(a.offer("commands"), Some(vec!["syslog".to_string()]));
        assert_eq!(a.offer("relp_software").unwrap().len(), 3);
        assert_eq!(a.offer("starttls"), None);
        let refused = Answer::parse(b"500 error 10010 on connect").unwrap();
        assert!(!refused.is_ok() && refused.text == "error 10010 on connect");
        assert_eq!(Answer::parse(b"200").unwrap().code, 200);
        for bad in [&b"OK"[..], b"20", b"2000 OK", b"", b"abc def"] {
            assert_eq!(Answer::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn txnr_wraps_to_one() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(999_999_999), 1);
    }
}

mod relp_sessions {
    use super::*;
    use dkron_exec_core::sinks::syslog::relp::{encode_frame, parse_frame, Frame};
    use std::io::Write;
    use std::sync::mpsc;

    fn read_frame(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Frame> {
        loop {
            if let Some((f, used)) = parse_frame(buf, 1 << 20).unwrap() {
                buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Answers `open` the way rsyslog does.
    fn accept_open(listener: &TcpListener) -> (TcpStream, Vec<u8>) {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let open = read_frame(&mut conn, &mut buf).unwrap();
        assert_eq!((open.txnr, open.command.as_str()), (1, "open"));
        let offers = String::from_utf8(open.data).unwrap();
        assert!(offers.starts_with("relp_version=0\n") && offers.contains("\ncommands=syslog"), "{offers}");
        let answer = b"200 OK\nrelp_version=0\nrelp_software=fake\ncommands=syslog";
        conn.write_all(&encode_frame(1, "rsp", answer)).unwrap();
        (conn, buf)
    }

    fn relp_sink(addr: &str) -> SyslogSink {
        sink(&[("transport", "relp"), ("address", addr), ("timeout", "5s")])
    }

    #[test]
    fn each_message_is_acknowledged_and_close_is_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, mut buf) = accept_open(&listener);
            let mut got = Vec::new();
            loop {
                let f = read_frame(&mut conn, &mut buf).unwrap();
                let reply: &[u8] = if f.command == "close" { b"" } else { b"200 OK" };
                conn.write_all(&encode_frame(f.txnr, "rsp", reply)).unwrap();
                if f.command == "close" {
                    return got;
                }
                got.push(f);
            }
        });
        let s = relp_sink(&addr);
        assert_eq!(s.send(&msg("é one".as_bytes(), true)).unwrap(), 1);
        assert_eq!(s.send(&msg(b"a\nb", false)).unwrap(), 1);
        s.close();
        let got = server.join().unwrap();
        assert_eq!(got.iter().map(|f| (f.txnr, f.command.as_str())).collect::<Vec<_>>(), [(2, "syslog"), (3, "syslog")]);
        assert!(got[0].data.starts_with(b"<78>1 ") && got[0].data.ends_with(" \u{feff}é one".as_bytes()));
        assert!(got[1].data.ends_with(b"] \xEF\xBB\xBFa\nb"), "one message, newlines kept");
    }

    #[test]
    fn a_message_unanswered_when_the_connection_breaks_is_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, mut buf) = accept_open(&listener);
            let first = read_frame(&mut conn, &mut buf).unwrap();
            drop(conn); // dies before answering
            let (mut conn, mut buf) = accept_open(&listener);
            let again = read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(again.txnr, "rsp", b"200 OK")).unwrap();
            (first, again)
        });
        let s = relp_sink(&addr);
        assert_eq!(s.send(&msg(b"must arrive", true)).unwrap(), 1);
        let (first, again) = server.join().unwrap();
        assert_eq!(first.data, again.data);
        assert_eq!(again.txnr, 2, "a new session starts again at 1 (open) and 2");
    }

    #[test]
    fn a_refusal_is_an_error_and_not_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, mut buf) = accept_open(&listener);
            let f = read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(f.txnr, "rsp", b"500 queue full")).unwrap();
            listener.set_nonblocking(true).unwrap();
            // The client moves on: the next frame on this connection is its next message.
            let next = read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(next.txnr, "rsp", b"200 OK")).unwrap();
            listener.accept().is_err()
        });
        let s = relp_sink(&addr);
        let err = s.send(&msg(b"refused", true)).unwrap_err().to_string();
        assert!(err.contains("relp:127.0.0.1:") && err.contains("500 queue full"), "{err}");
        s.send(&msg(b"next", true)).unwrap();
        assert!(server.join().unwrap(), "no second connection");
    }

    #[test]
    fn a_serverclose_hint_makes_the_next_send_reconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (hinted_tx, hinted) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let (mut conn, mut buf) = accept_open(&listener);
            let f = read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(f.txnr, "rsp", b"200 OK")).unwrap();
            conn.write_all(b"0 serverclose 0\n").unwrap();
            hinted_tx.send(()).unwrap();
            // The session stays open on our side: only the hint says it is over.
            let (mut conn2, mut buf2) = accept_open(&listener);
            let f = read_frame(&mut conn2, &mut buf2).unwrap();
            conn2.write_all(&encode_frame(f.txnr, "rsp", b"200 OK")).unwrap();
            drop(conn);
            f
        });
        let s = relp_sink(&addr);
        s.send(&msg(b"one", true)).unwrap();
        hinted.recv().unwrap();
        // The hint may still be on its way over loopback; either path ends on the new session.
        s.send(&msg(b"two", true)).unwrap();
        let f = server.join().unwrap();
        assert!(f.data.ends_with(b"two"));
    }

    #[test]
    fn malformed_answer_and_no_server_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, mut buf) = accept_open(&listener);
                let f = read_frame(&mut conn, &mut buf).unwrap();
                conn.write_all(format!("{} rsp 2 OKgarbage\n", f.txnr).as_bytes()).unwrap();
                let _ = read_frame(&mut conn, &mut buf);
            }
        });
        let s = relp_sink(&addr);
        let err = s.send(&msg(b"x", true)).unwrap_err().to_string();
        assert!(err.contains("malformed RELP frame"), "{err}");

        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let s = sink(&[("transport", "relp"), ("address", &addr), ("timeout", "200ms")]);
        let err = s.send(&msg(b"x", true)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("relp:{addr}: ")) && err.contains("refused"), "{err}");
    }

    #[test]
    fn no_answer_within_the_timeout_is_queued_and_sent_before_the_next_message() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (silent_tx, silent) = mpsc::channel();
        let server = std::thread::spawn(move || {
            // The first session takes the message and never answers it (kept open: silence).
            let (mut held, mut buf) = accept_open(&listener);
            assert_eq!(read_frame(&mut held, &mut buf).unwrap().command, "syslog");
            silent_tx.send(()).unwrap();
            let got = ack_all(&listener);
            drop(held);
            got
        });
        let s = sink(&[("transport", "relp"), ("address", &addr), ("timeout", "200ms")]);
        let err = s.send(&msg(b"unanswered", true)).unwrap_err().to_string();
        assert!(err.contains("not delivered yet (no answer to syslog within 200ms); queued for resend (1 waiting)"), "{err}");
        assert_eq!(s.waiting(), 1);
        silent.recv().unwrap();
        assert_eq!(s.send(&msg(b"next", true)).unwrap(), 1);
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.close(), None);
        let got = server.join().unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(b"unanswered") && got[1].ends_with(b"next"), "in order");
    }

    fn keyed<'a>(key: &'a str, output: &'a [u8]) -> ExecutionMessage<'a> {
        ExecutionMessage { key, ..msg(output, true) }
    }

    /// A port nothing listens on (yet): bound, then let go.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Acknowledges every syslog message of one session until `close`; returns their data.
    fn ack_all(listener: &TcpListener) -> Vec<Vec<u8>> {
        let (mut conn, mut buf) = accept_open(listener);
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut conn, &mut buf) {
            let reply: &[u8] = if f.command == "close" { b"" } else { b"200 OK" };
            conn.write_all(&encode_frame(f.txnr, "rsp", reply)).unwrap();
            if f.command == "close" {
                break;
            }
            got.push(f.data);
        }
        got
    }

    #[test]
    fn a_server_restarted_within_the_timeout_costs_only_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, mut buf) = accept_open(&listener);
            let first = read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(first.txnr, "rsp", b"200 OK")).unwrap();
            let unanswered = read_frame(&mut conn, &mut buf).unwrap();
            // Dies before answering, and nothing listens for a while: connections are refused.
            drop((conn, listener));
            std::thread::sleep(Duration::from_millis(300));
            let listener = TcpListener::bind(addr).unwrap();
            let again = ack_all(&listener);
            (first.data, unanswered.data, again)
        });
        let s = relp_sink(&addr.to_string());
        assert_eq!(s.send(&keyed("k1", b"one")).unwrap(), 1);
        assert_eq!(s.send(&keyed("k2", b"two")).unwrap(), 1, "no error: the daemon came back in time");
        assert_eq!(s.close(), None);
        let (first, unanswered, again) = server.join().unwrap();
        assert!(first.ends_with(b"one") && unanswered.ends_with(b"two"));
        // Acknowledged once, never again; the unanswered one sent again on the new session.
        assert_eq!(again, [unanswered]);
    }

    #[test]
    fn the_queue_keeps_order_drops_the_oldest_and_says_whose() {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let s = sink(&[("transport", "relp"), ("address", &addr), ("timeout", "100ms"), ("queue_size", "2")]);
        let err = s.send(&keyed("k1", b"one")).unwrap_err().to_string();
        assert!(err.starts_with(&format!("relp:{addr}: not delivered yet (")), "{err}");
        assert!(err.contains("refused") && err.ends_with("queued for resend (1 waiting)"), "{err}");
        let err = s.send(&keyed("k2", b"two")).unwrap_err().to_string();
        assert!(err.ends_with("queued for resend (2 waiting)"), "{err}");
        let err = s.send(&keyed("k3", b"three")).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "queued for resend (2 waiting); the resend queue is full (queue_size 2): \
                 dropped the 1 oldest waiting message(s), of execution(s) k1"
            ),
            "{err}"
        );
        let listener = TcpListener::bind(&addr).unwrap();
        let server = std::thread::spawn(move || ack_all(&listener));
        assert_eq!(s.send(&keyed("k4", b"four")).unwrap(), 1);
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.close(), None);
        let got = server.join().unwrap();
        assert_eq!(got.len(), 3, "k1 dropped, the rest once each");
        for (data, (key, text)) in got.iter().zip([("k2", "two"), ("k3", "three"), ("k4", "four")]) {
            let data = String::from_utf8_lossy(data);
            assert!(data.contains(&format!("execution=\"{key}\"")) && data.ends_with(text), "in order: {data}");
        }
    }

    #[test]
    fn close_delivers_what_waits_or_says_what_is_dropped() {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let s = sink(&[("transport", "relp"), ("address", &addr), ("timeout", "100ms")]);
        s.send(&keyed("k1", b"one")).unwrap_err();
        s.send(&keyed("k2", b"two")).unwrap_err();
        let report = s.close().expect("nothing listens: the messages are dropped, and said so");
        assert!(report.starts_with(&format!("relp:{addr}: 2 message(s) not delivered by close (")), "{report}");
        assert!(report.ends_with(") and dropped, of execution(s) k1, k2"), "{report}");
        assert_eq!(s.waiting(), 0);

        s.send(&keyed("k3", b"three")).unwrap_err();
        let listener = TcpListener::bind(&addr).unwrap();
        let server = std::thread::spawn(move || ack_all(&listener));
        assert_eq!(s.close(), None, "the daemon is back: delivered at close");
        let got = server.join().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with(b"three"));
    }

    #[test]
    fn a_server_without_the_syslog_command_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            read_frame(&mut conn, &mut buf).unwrap();
            conn.write_all(&encode_frame(1, "rsp", b"200 OK\nrelp_version=0\ncommands=")).unwrap();
            let _ = read_frame(&mut conn, &mut buf);
        });
        let err = relp_sink(&addr).send(&msg(b"x", true)).unwrap_err().to_string();
        assert!(err.contains("does not offer the syslog command"), "{err}");
    }
}
