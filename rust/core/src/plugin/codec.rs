//! Frames of the plugin protocol (docs/PROTOCOL.md §3):
//!
//! ```text
//! u32 BE  L = 4 + H + B        (4 <= L <= max frame)
//! u32 BE  H                    (header length)
//! H bytes header: a JSON object with a string "type"
//! B bytes body: raw bytes (job output is never base64'd)
//! ```

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::execution::ProtocolFields;

/// A request as a plugin reads it, parsed straight from the header's JSON (the SDK's hot path:
/// no map in between). Unknown keys are ignored.
#[derive(Debug, Deserialize)]
pub struct Request {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<u64>,
    #[serde(default)]
    pub execution: Option<ProtocolFields>,
    #[serde(default)]
    pub config: Option<std::collections::HashMap<String, Value>>,
}

/// The largest frame either side may send (prefix excluded): 64 MiB.
pub const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Map<String, Value>,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(header: Map<String, Value>, body: Vec<u8>) -> Self {
        Self { header, body }
    }

    pub fn kind(&self) -> &str {
        self.header.get("type").and_then(Value::as_str).unwrap_or("")
    }

    pub fn id(&self) -> Option<u64> {
        self.header.get("id").and_then(Value::as_u64)
    }

    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }
}

#[derive(Debug)]
pub enum CodecError {
    Io(std::io::Error),
    /// The stream ended inside a frame.
    Truncated,
    Oversize { len: usize, max: usize },
    Malformed(String),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Io(e) => write!(f, "I/O error on the plugin channel: {e}"),
            CodecError::Truncated => write!(f, "the channel closed in the middle of a frame"),
            CodecError::Oversize { len, max } => write!(f, "frame of {len} bytes exceeds the maximum of {max}"),
            CodecError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e)
    }
}

/// One frame as bytes, ready to write; refuses frames larger than `max`.
pub fn encode(header: &Map<String, Value>, body: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let head = serde_json::to_vec(header).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let len = 4 + head.len() + body.len();
    if len > max {
        return Err(CodecError::Oversize { len, max });
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    Ok(out)
}

/// The prefix and header of a frame whose body (`body_len` bytes) is written separately, so a
/// large body is never copied; refuses frames larger than `max`.
pub fn encode_head(header: &[u8], body_len: usize, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(8 + header.len());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(header);
    finish_head(out, body_len, max)
}

/// The head of a frame that carries an execution (docs/PROTOCOL.md §4: `process` requests and
/// `result` answers), encoded straight from the record, with `config` when given; the prefix is
/// left for `finish_head`.
pub fn execution_head(
    kind: &str,
    id: u64,
    execution: &crate::execution::Execution,
    config: Option<&std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, CodecError> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(&[0; 8]);
    head.extend_from_slice(b"{\"type\":\"");
    head.extend_from_slice(kind.as_bytes());
    head.extend_from_slice(b"\",\"id\":");
    head.extend_from_slice(id.to_string().as_bytes());
    head.extend_from_slice(b",\"execution\":");
    execution.write_protocol_json(&mut head);
    if let Some(config) = config {
        head.extend_from_slice(b",\"config\":");
        serde_json::to_writer(&mut head, config).map_err(|e| CodecError::Malformed(e.to_string()))?;
    }
    head.push(b'}');
    Ok(head)
}

/// Fills in the 8-byte prefix of `head` (8 placeholder bytes, then the header JSON).
pub fn finish_head(mut head: Vec<u8>, body_len: usize, max: usize) -> Result<Vec<u8>, CodecError> {
    let hlen = head.len() - 8;
    let len = 4 + hlen + body_len;
    if len > max {
        return Err(CodecError::Oversize { len, max });
    }
    head[..4].copy_from_slice(&(len as u32).to_be_bytes());
    head[4..8].copy_from_slice(&(hlen as u32).to_be_bytes());
    Ok(head)
}

/// The header length of a payload (the part after the length prefix), checked against it.
pub(crate) fn header_len(payload: &[u8]) -> Result<usize, CodecError> {
    if payload.len() < 4 {
        return Err(CodecError::Malformed(format!("frame of {} bytes has no header length", payload.len())));
    }
    let hlen = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
    if hlen > payload.len() - 4 {
        return Err(CodecError::Malformed(format!(
            "header length {hlen} exceeds the frame's {} bytes",
            payload.len() - 4
        )));
    }
    Ok(hlen)
}

/// A header: a JSON object with a string "type".
pub fn parse_header(bytes: &[u8]) -> Result<Map<String, Value>, CodecError> {
    let header = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(CodecError::Malformed("the header is not a JSON object".into())),
        Err(e) => return Err(CodecError::Malformed(format!("the header is not JSON: {e}"))),
    };
    if !header.get("type").is_some_and(Value::is_string) {
        return Err(CodecError::Malformed("the header has no string \"type\"".into()));
    }
    Ok(header)
}

/// Parses the part after the length prefix.
pub fn decode(payload: Vec<u8>) -> Result<Frame, CodecError> {
    let hlen = header_len(&payload)?;
    let header = parse_header(&payload[4..4 + hlen])?;
    let mut body = payload;
    body.drain(..4 + hlen);
    Ok(Frame { header, body })
}

/// Reads the next frame; Ok(None) on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Frame>, CodecError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(CodecError::Truncated) };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::Oversize { len, max });
    }
    let mut payload = vec![0u8; len];
    match r.read_exact(&mut payload).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(CodecError::Truncated),
        Err(e) => return Err(e.into()),
    }
    decode(payload).map(Some)
}

pub use super::wire::{FrameReader, Read};

/// Builds a header map from `("key", value)` pairs.
pub fn header<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn roundtrip(bytes: &[u8], max: usize) -> Result<Option<Frame>, CodecError> {
        let mut r = bytes;
        read_frame(&mut r, max).await
    }

    #[tokio::test]
    async fn encodes_and_decodes() {
        let h = header([("type", json!("process")), ("id", json!(7))]);
        let body = vec![0u8, 255, 10, 13];
        let bytes = encode(&h, &body, MAX_FRAME).unwrap();
        let f = roundtrip(&bytes, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!(f.kind(), "process");
        assert_eq!(f.id(), Some(7));
        assert_eq!(f.body, body);
    }

    #[tokio::test]
    async fn clean_eof_is_none_and_partial_is_truncated() {
        assert!(roundtrip(b"", MAX_FRAME).await.unwrap().is_none());
        assert!(matches!(roundtrip(b"\0\0", MAX_FRAME).await, Err(CodecError::Truncated)));
        assert!(matches!(roundtrip(b"\0\0\0\x10\0\0", MAX_FRAME).await, Err(CodecError::Truncated)));
    }

    #[tokio::test]
    async fn oversize_is_refused_both_ways() {
        let h = header([("type", json!("x"))]);
        assert!(matches!(encode(&h, &[0; 100], 50), Err(CodecError::Oversize { .. })));
        let bytes = encode(&h, &[0; 100], MAX_FRAME).unwrap();
        assert!(matches!(roundtrip(&bytes, 50).await, Err(CodecError::Oversize { len: 116, max: 50 })));
        // A huge prefix is refused before any allocation.
        assert!(matches!(roundtrip(b"\xff\xff\xff\xff", MAX_FRAME).await, Err(CodecError::Oversize { .. })));
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let cases: [&[u8]; 4] = [
            b"\0\0\0\x02ab",                  // no header length
            b"\0\0\0\x06\0\0\0\x09ab",        // header longer than the frame
            b"\0\0\0\x07\0\0\0\x03abc",       // not JSON
            b"\0\0\0\x06\0\0\0\x02{}",        // no type
        ];
        for case in cases {
            assert!(matches!(roundtrip(case, MAX_FRAME).await, Err(CodecError::Malformed(_))), "{case:?}");
        }
    }
}
