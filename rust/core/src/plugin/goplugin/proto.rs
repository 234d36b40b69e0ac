//! Protocol Buffers for exactly the messages a Dkron executor exchanges (Dkron's
//! `proto/executor.proto`, go-plugin's `grpc_broker.proto` and `grpc_stdio.proto`), and gRPC's
//! message framing. Written by hand: a handful of scalar, bytes and map fields does not need a
//! code generator. Decoders skip fields they do not know, as protobuf requires.

use std::collections::BTreeMap;

/// Wire types this code meets: varint, 64-bit, length-delimited, 32-bit.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A length-delimited field; proto3 leaves out empty ones.
fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    if !data.is_empty() {
        put_key(out, field, LEN);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
}

/// A varint field; proto3 leaves out zeros.
fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(out, field, VARINT);
        put_varint(out, v);
    }
}

/// A field as read: its number and its value.
#[derive(Debug, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// 32- and 64-bit fields: no message here has one, they are skipped.
    Fixed,
}

struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.data.split_first().ok_or("a varint runs past the end of the message")?;
            self.data = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.data.len() {
            return Err(format!("a field of {n} bytes runs past the end of the message ({} left)", self.data.len()));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Option<Result<(u32, Value<'a>), String>> {
        if self.data.is_empty() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, Value<'a>), String> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| format!("field number {} out of range", key >> 3))?;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let n = self.varint()?;
                Value::Bytes(self.take(usize::try_from(n).map_err(|_| "a huge length".to_string())?)?)
            }
            FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            w => return Err(format!("wire type {w} of field {field} is not supported")),
        };
        Ok((field, value))
    }
}

/// Calls `each` with every field of `msg`; a field of a known number with the wrong wire type
/// is an error (`each` says so by returning Err).
fn for_fields<'a>(msg: &'a [u8], mut each: impl FnMut(u32, Value<'a>) -> Result<(), String>) -> Result<(), String> {
    let mut fields = Fields { data: msg };
    while let Some(f) = fields.next_field() {
        let (n, v) = f?;
        each(n, v)?;
    }
    Ok(())
}

fn want_bytes<'a>(name: &str, v: Value<'a>) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        other => Err(format!("field {name} should be length-delimited, got {other:?}")),
    }
}

fn want_string(name: &str, v: Value<'_>) -> Result<String, String> {
    String::from_utf8(want_bytes(name, v)?.to_vec()).map_err(|_| format!("field {name} is not UTF-8"))
}

fn want_varint(name: &str, v: Value<'_>) -> Result<u64, String> {
    match v {
        Value::Varint(n) => Ok(n),
        other => Err(format!("field {name} should be a varint, got {other:?}")),
    }
}

/// go-plugin's `plugin.ConnInfo` (the broker's message). `knock` (field 4) is only for the
/// multiplexed mode Dkron does not use: never sent, skipped when read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    pub service_id: u32,
    pub network: String,
    pub address: String,
}

impl ConnInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, u64::from(self.service_id));
        put_bytes(&mut out, 2, self.network.as_bytes());
        put_bytes(&mut out, 3, self.address.as_bytes());
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, String> {
        let mut c = ConnInfo::default();
        for_fields(msg, |n, v| {
            match n {
                1 => c.service_id = want_varint("ConnInfo.service_id", v)? as u32,
                2 => c.network = want_string("ConnInfo.network", v)?,
                3 => c.address = want_string("ConnInfo.address", v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(c)
    }
}

/// Dkron's `ExecuteRequest`: the job's name, its executor config (a map of strings; written in
/// key order, though order does not matter on the wire), and the broker id of the host's
/// StatusHelper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecuteRequest {
    pub job_name: String,
    pub config: BTreeMap<String, String>,
    pub status_server: u32,
}

impl ExecuteRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.job_name.as_bytes());
        for (k, v) in &self.config {
            // A map entry is a message {key = 1, value = 2}; Go writes both even when empty.
            let mut entry = Vec::with_capacity(k.len() + v.len() + 4);
            for (field, data) in [(1, k), (2, v)] {
                put_key(&mut entry, field, LEN);
                put_varint(&mut entry, data.len() as u64);
                entry.extend_from_slice(data.as_bytes());
            }
            put_key(&mut out, 2, LEN);
            put_varint(&mut out, entry.len() as u64);
            out.extend_from_slice(&entry);
        }
        put_uint(&mut out, 3, u64::from(self.status_server));
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, String> {
        let mut r = ExecuteRequest::default();
        for_fields(msg, |n, v| {
            match n {
                1 => r.job_name = want_string("ExecuteRequest.job_name", v)?,
                2 => {
                    let (mut key, mut value) = (String::new(), String::new());
                    for_fields(want_bytes("ExecuteRequest.config", v)?, |n, v| {
                        match n {
                            1 => key = want_string("ExecuteRequest.config key", v)?,
                            2 => value = want_string("ExecuteRequest.config value", v)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    r.config.insert(key, value);
                }
                3 => r.status_server = want_varint("ExecuteRequest.status_server", v)? as u32,
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// Dkron's `ExecuteResponse`: the whole output (the executor's own buffer) and the error, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecuteResponse {
    pub output: Vec<u8>,
    pub error: String,
}

impl ExecuteResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &self.output);
        put_bytes(&mut out, 2, self.error.as_bytes());
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, String> {
        let mut r = ExecuteResponse::default();
        for_fields(msg, |n, v| {
            match n {
                1 => r.output = want_bytes("ExecuteResponse.output", v)?.to_vec(),
                2 => r.error = want_string("ExecuteResponse.error", v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// Dkron's `StatusUpdateRequest`: a chunk of output, and whether it came from stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusUpdate {
    pub output: Vec<u8>,
    pub error: bool,
}

impl StatusUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 2, &self.output);
        put_uint(&mut out, 3, u64::from(self.error));
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, String> {
        let mut r = StatusUpdate::default();
        for_fields(msg, |n, v| {
            match n {
                2 => r.output = want_bytes("StatusUpdateRequest.output", v)?.to_vec(),
                3 => r.error = want_varint("StatusUpdateRequest.error", v)? != 0,
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// Dkron's `StatusUpdateResponse{int64 r = 1}` (negative numbers are 10-byte varints).
pub fn encode_status_response(r: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uint(&mut out, 1, r as u64);
    out
}

pub fn decode_status_response(msg: &[u8]) -> Result<i64, String> {
    let mut r = 0;
    for_fields(msg, |n, v| {
        if n == 1 {
            r = want_varint("StatusUpdateResponse.r", v)? as i64;
        }
        Ok(())
    })?;
    Ok(r)
}

/// go-plugin's `StdioData`: channel 1 is stdout, 2 stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioData {
    pub channel: u64,
    pub data: Vec<u8>,
}

impl StdioData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.channel);
        put_bytes(&mut out, 2, &self.data);
        out
    }

    pub fn decode(msg: &[u8]) -> Result<Self, String> {
        let mut r = StdioData::default();
        for_fields(msg, |n, v| {
            match n {
                1 => r.channel = want_varint("StdioData.channel", v)?,
                2 => r.data = want_bytes("StdioData.data", v)?.to_vec(),
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// gRPC's length-prefixed message: a compressed flag (always 0 here), a big-endian u32 length,
/// the message.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Splits gRPC messages out of a byte stream (HTTP/2 DATA frames cut them anywhere).
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    max: usize,
}

impl Deframer {
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(format!("a compressed gRPC message (flag {}): no compression was negotiated", self.buf[0]));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(format!("a gRPC message of {len} bytes, over the limit of {}", self.max));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let msg = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(msg))
    }

    /// Bytes of a message not yet complete (a stream that ends here was cut).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_their_boundaries() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Fields { data: &out }.varint().unwrap(), v);
        }
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn truncated_and_overlong_input_is_an_error_not_a_panic() {
        assert!(ExecuteResponse::decode(&[0x0a, 0x05, b'a']).is_err());
        assert!(ExecuteResponse::decode(&[0x0a]).is_err());
        assert!(ExecuteResponse::decode(&[0x08; 11]).is_err());
        assert!(ExecuteResponse::decode(&[0x0b]).is_err(), "wire type 3 (groups) is refused");
        assert!(ExecuteResponse::decode(&[0x08, 0x01]).is_err(), "output as a varint is refused");
    }
}
