//! The protobuf messages and gRPC framing of Dkron's executor plugins, against bytes Go produced:
//! `proto.MarshalOptions{Deterministic: true}.Marshal` of Dkron v4.0.5's `types` messages (the
//! values below). go-plugin's `ConnInfo` and `StdioData` are internal to go-plugin, so their
//! bytes are written out from `grpc_broker.proto` / `grpc_stdio.proto` field by field.

use std::collections::BTreeMap;

use dkron_exec_core::plugin::goplugin::proto::{
    decode_status_response, encode_status_response, frame, ConnInfo, Deframer, ExecuteRequest, ExecuteResponse,
    StatusUpdate, StdioData,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn request() -> ExecuteRequest {
    let config: BTreeMap<String, String> =
        [("command", "echo hi"), ("empty", ""), ("timeout", "5s")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    ExecuteRequest { job_name: "job-1".into(), config, status_server: 300 }
}

#[test]
fn execute_request_encodes_exactly_as_go_does() {
    let go = hex("0a056a6f622d3112120a07636f6d6d616e6412076563686f20686912090a05656d7074791200120d0a0774696d656f75741202357318ac02");
    assert_eq!(request().encode(), go);
    assert_eq!(ExecuteRequest::decode(&go).unwrap(), request());
}

#[test]
fn execute_response_from_go_decodes_with_its_bytes() {
    let go = hex("0a066f757400ff0a120d65786974207374617475732031");
    let r = ExecuteResponse::decode(&go).unwrap();
    assert_eq!(r, ExecuteResponse { output: b"out\x00\xff\n".to_vec(), error: "exit status 1".into() });
    assert_eq!(r.encode(), go);
    assert_eq!(ExecuteResponse::decode(&[]).unwrap(), ExecuteResponse::default(), "all fields zero: an empty message");
}

#[test]
fn status_updates_from_go_decode_and_answers_encode_as_go_does() {
    let u = StatusUpdate::decode(&hex("12066368756e6b0a1801")).unwrap();
    assert_eq!(u, StatusUpdate { output: b"chunk\n".to_vec(), error: true });
    assert_eq!(u.encode(), hex("12066368756e6b0a1801"));
    assert_eq!(StatusUpdate::decode(&hex("120178")).unwrap(), StatusUpdate { output: b"x".to_vec(), error: false });
    assert_eq!(encode_status_response(6), hex("0806"));
    assert_eq!(encode_status_response(-1), hex("08ffffffffffffffffff01"));
    assert_eq!(decode_status_response(&hex("08ffffffffffffffffff01")).unwrap(), -1);
}

#[test]
fn conn_info_and_stdio_data_follow_go_plugins_protos() {
    let info = ConnInfo { service_id: 7, network: "unix".into(), address: "@a/b".into() };
    // service_id = 1 (varint), network = 2, address = 3.
    assert_eq!(info.encode(), hex("08071204756e69781a0440612f62"));
    // A knock (field 4, a message) from a multiplexing plugin is skipped.
    let mut with_knock = info.encode();
    with_knock.extend_from_slice(&hex("22020801"));
    assert_eq!(ConnInfo::decode(&with_knock).unwrap(), info);
    let d = StdioData::decode(&hex("080212046572720a")).unwrap();
    assert_eq!(d, StdioData { channel: 2, data: b"err\n".to_vec() });
}

#[test]
fn unknown_fields_are_skipped_of_every_wire_type() {
    // Field 9 as varint, 64-bit, length-delimited and 32-bit, around the known ones.
    let mut msg = hex("4801");
    msg.extend(hex("490102030405060708"));
    msg.extend(hex("0a0161"));
    msg.extend(hex("4a03787878"));
    msg.extend(hex("4d01020304"));
    msg.extend(hex("120165"));
    assert_eq!(ExecuteResponse::decode(&msg).unwrap(), ExecuteResponse { output: b"a".to_vec(), error: "e".into() });
}

#[test]
fn grpc_frames_are_split_out_of_any_chunking() {
    let a = frame(b"first");
    assert_eq!(a[..5], [0, 0, 0, 0, 5]);
    let mut stream = a.clone();
    stream.extend(frame(b""));
    stream.extend(frame(&[7u8; 300]));
    // Fed one byte at a time, as HTTP/2 DATA frames may cut them.
    let mut d = Deframer::new(1024);
    let mut got = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some(m) = d.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]]);
    assert_eq!(d.pending(), 0);
}

#[test]
fn oversize_and_compressed_frames_are_refused() {
    let mut d = Deframer::new(10);
    d.push(&frame(&[0u8; 11]));
    assert!(d.next_message().unwrap_err().contains("11 bytes"));
    let mut d = Deframer::new(10);
    d.push(&[1, 0, 0, 0, 1, 0]);
    assert!(d.next_message().unwrap_err().contains("compressed"));
}

// The executor client against a fake plugin speaking go-plugin's gRPC as Dkron v4.0.9 serves it
// (only `types.v1.ExecutorService`), so both service names are covered without Go: the client
// opens the broker and stdio streams, falls back to the new name, announces its StatusHelper on
// the broker stream, and serves `Update` there under the new name too.

mod fake_plugin {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use dkron_exec_core::plugin::codec::Frame;
    use dkron_exec_core::plugin::goplugin::executor::GoExecutor;
    use dkron_exec_core::plugin::goplugin::grpc;
    use dkron_exec_core::plugin::goplugin::proto::{frame, ConnInfo, Deframer, ExecuteRequest, ExecuteResponse, StatusUpdate, StdioData};
    use dkron_exec_core::plugin::goplugin::{Connect, Handshake};
    use dkron_exec_core::plugin::logs::LogQueue;
    use dkron_exec_core::plugin::supervisor::CallSink;
    use dkron_exec_core::plugin::PluginFailure;
    use h2::server::SendResponse;
    use h2::RecvStream;
    use http::{HeaderMap, Response};
    use tokio::sync::mpsc;

    fn ok_head() -> Response<()> {
        Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap()
    }

    async fn messages(body: &mut RecvStream, d: &mut Deframer) -> Option<Vec<u8>> {
        loop {
            if let Some(m) = d.next_message().unwrap() {
                return Some(m);
            }
            let chunk = body.data().await?.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            d.push(&chunk);
        }
    }

    /// One request to the fake plugin.
    async fn handle(path: String, mut body: RecvStream, mut respond: SendResponse<Bytes>, broker: mpsc::UnboundedSender<ConnInfo>, infos: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ConnInfo>>>) {
        let mut d = Deframer::new(1 << 20);
        match path.as_str() {
            "/plugin.GRPCBroker/StartStream" => {
                let _stream = respond.send_response(ok_head(), false).unwrap();
                while let Some(m) = messages(&mut body, &mut d).await {
                    broker.send(ConnInfo::decode(&m).unwrap()).unwrap();
                }
            }
            "/plugin.GRPCStdio/StreamStdio" => {
                let mut stream = respond.send_response(ok_head(), false).unwrap();
                let line = StdioData { channel: 2, data: b"piped stderr line\n".to_vec() };
                stream.send_data(Bytes::from(frame(&line.encode())), false).unwrap();
                std::future::pending::<()>().await;
            }
            "/types.v1.ExecutorService/Execute" => {
                let req = ExecuteRequest::decode(&messages(&mut body, &mut d).await.unwrap()).unwrap();
                // go-plugin's broker.Dial: the ConnInfo announced under the request's id.
                let info = loop {
                    let info = infos.lock().await.recv().await.unwrap();
                    if info.service_id == req.status_server {
                        break info;
                    }
                };
                assert_eq!(info.network, "unix");
                let name = info.address.strip_prefix('@').expect("an abstract socket");
                let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap();
                let conn = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
                conn.set_nonblocking(true).unwrap();
                let (send, h2conn) = h2::client::handshake(tokio::net::UnixStream::from_std(conn).unwrap()).await.unwrap();
                tokio::spawn(h2conn);
                let mut out = Vec::new();
                for (chunk, stderr) in [(&b"one\n"[..], false), (b"two\n", true)] {
                    let u = StatusUpdate { output: chunk.to_vec(), error: stderr };
                    let r = grpc::unary(&send, "/types.v1.StatusHelperService/Update", &u.encode(), 1 << 20).await.unwrap();
                    assert_eq!(dkron_exec_core::plugin::goplugin::proto::decode_status_response(&r).unwrap(), chunk.len() as i64);
                    out.extend_from_slice(chunk);
                }
                let config: Vec<String> = req.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.extend_from_slice(format!("{} {}\n", req.job_name, config.join(",")).as_bytes());
                let answer = ExecuteResponse { output: out, error: "it failed".into() };
                let mut stream = respond.send_response(ok_head(), false).unwrap();
                stream.send_data(Bytes::from(frame(&answer.encode())), false).unwrap();
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                stream.send_trailers(trailers).unwrap();
            }
            _ => {
                // A v4.0.9 plugin does not know v4.0.5's names.
                let head = Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "12")
                    .header("grpc-message", "unknown service")
                    .body(())
                    .unwrap();
                respond.send_response(head, true).unwrap();
            }
        }
    }

    #[derive(Default)]
    struct Sink {
        chunks: Mutex<Vec<(bool, Vec<u8>)>>,
    }

    impl CallSink for Sink {
        fn output(&self, stderr: bool, data: &[u8]) {
            self.chunks.lock().unwrap().push((stderr, data.to_vec()));
        }
        fn finish(&self, _: Result<Frame, PluginFailure>) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_execute_reaches_a_v4_0_9_plugin_and_streams_through_status_helper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(socket).await.unwrap();
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            while let Some(Ok((req, respond))) = conn.accept().await {
                let path = req.uri().path().to_string();
                tokio::spawn(handle(path, req.into_body(), respond, tx.clone(), rx.clone()));
            }
        });
        let logs = Arc::new(LogQueue::default());
        let hs = Handshake { network: "unix".into(), address: path.to_str().unwrap().into(), protocol: "grpc".into() };
        let connect = Connect {
            generation: 1,
            who: "plugin executor 'fake'".into(),
            name: "fake".into(),
            logs: logs.clone(),
            on_end: Box::new(|_| {}),
            on_give_up: Box::new(|_, _| {}),
        };
        let client = GoExecutor::connect(&hs, connect).await.unwrap();
        assert!(!path.exists(), "the socket's name is removed once connected");
        let sink = Arc::new(Sink::default());
        let s: Arc<dyn CallSink> = sink.clone();
        let config = [("command".to_string(), "x y".to_string()), ("n".to_string(), "5".to_string())].into_iter().collect();
        let frame = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let frame = client.execute("job-9", config, Some(deadline), None, s, &mut || false);
            (frame, client)
        });
        let (frame, client) = frame.await.unwrap();
        let frame = frame.unwrap();
        assert_eq!(frame.str_field("error"), Some("it failed"));
        // The response's output repeats the streamed chunks, then adds what was not streamed.
        assert_eq!(*sink.chunks.lock().unwrap(), vec![(false, b"one\n".to_vec()), (true, b"two\n".to_vec())]);
        assert_eq!(frame.body, b"job-9 command=x y,n=5\n");
        assert!(client.usable());
        let lines = logs.drain(Duration::from_secs(5)).unwrap();
        assert!(lines.iter().any(|l| l.plugin == "fake" && l.stream == "stderr" && l.line == "piped stderr line"), "{lines:?}");
    }
}
