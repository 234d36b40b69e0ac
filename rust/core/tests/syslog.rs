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
    assert!(got[0].ends_with("job=\"backup\" execution=\"1700000000000000000-node1\" success=\"true\" exit_code=\"0\"] line 1\nline 2"));
    assert!(got[1].starts_with("<75>1 ") && got[1].ends_with("success=\"false\" exit_code=\"2\"] second"));
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
        assert!(got.starts_with("<78>1 ") && got.ends_with(&format!("] {want}")), "{got}");
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
    assert!(read_octets(&mut first, 1)[0].ends_with("] one"));
    drop(first); // the daemon restarts
    std::thread::sleep(Duration::from_millis(50));
    s.send(&msg(b"two", true)).unwrap();
    let (mut second, _) = listener.accept().unwrap();
    assert!(read_octets(&mut second, 1)[0].ends_with("] two"), "not lost in the dead connection");
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
    assert!(read_octets(&mut conn, 1)[0].ends_with("] three"));
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
