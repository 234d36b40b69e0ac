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
