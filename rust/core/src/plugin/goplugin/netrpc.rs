//! Go's net/rpc client codec over one yamux stream: each request is gob(rpc.Request) then
//! gob(args); each reply gob(rpc.Response) then gob(reply). One gob encoder and one decoder per
//! stream and direction, kept for the stream's life (type definitions go out only once).

use super::gob::{self, Decoder, Encoder, Value};
use super::yamux::Stream;

pub struct RpcStream {
    pub stream: Stream,
    enc: Encoder,
    dec: Decoder,
    seq: u64,
}

/// What a call can end in.
#[derive(Debug)]
pub enum RpcError {
    /// The stream or session failed (the plugin probably died).
    Io(String),
    /// The reply broke the protocol.
    Protocol(String),
    /// The plugin's method returned an error.
    Remote(String),
}

impl RpcStream {
    pub fn new(stream: Stream) -> Self {
        Self { stream, enc: Encoder::default(), dec: Decoder::default(), seq: 0 }
    }

    /// Sends one request; `args` writes the argument with this stream's encoder.
    pub async fn call(&mut self, method: &str, args: impl FnOnce(&mut Encoder, &mut Vec<u8>)) -> Result<Value, RpcError> {
        let seq = self.seq;
        self.seq += 1;
        let mut out = Vec::new();
        self.enc.request(&mut out, method, seq);
        args(&mut self.enc, &mut out);
        self.stream.write_all(&out).await.map_err(RpcError::Io)?;
        let head = self.value().await?;
        let body = self.value().await?;
        let got = head.field("Seq").and_then(Value::as_i64).unwrap_or(0);
        if got != seq as i64 {
            return Err(RpcError::Protocol(format!("answered call {got} when call {seq} was due")));
        }
        match head.field("Error").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => Err(RpcError::Remote(e)),
            _ => Ok(body),
        }
    }

    /// The next value on the stream, reading past type definitions.
    async fn value(&mut self) -> Result<Value, RpcError> {
        loop {
            let len = self.read_uint().await?;
            if len > 1 << 30 {
                return Err(RpcError::Protocol(format!("a gob message of {len} bytes")));
            }
            let msg = self.stream.read_exact(len as usize).await.map_err(RpcError::Io)?;
            match self.dec.message(&msg) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => return Err(RpcError::Protocol(e.to_string())),
            }
        }
    }

    async fn read_uint(&mut self) -> Result<u64, RpcError> {
        let first = self.stream.read_u8().await.map_err(RpcError::Io)?;
        if first < 128 {
            return Ok(u64::from(first));
        }
        let n = 256 - usize::from(first);
        if n > 8 {
            return Err(RpcError::Protocol(format!("a gob length of {n} bytes")));
        }
        let bytes = self.stream.read_exact(n).await.map_err(RpcError::Io)?;
        Ok(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }
}

/// `Dispenser.Dispense("processor")`'s broker id.
pub async fn dispense(control: &mut RpcStream, what: &str) -> Result<u32, RpcError> {
    let v = control.call("Dispenser.Dispense", |enc, out| enc.string(out, what)).await?;
    v.as_i64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| RpcError::Protocol(format!("Dispense answered {v:?}, not a broker id")))
}

/// `Control.Quit(true)`: the plugin exits after answering.
pub async fn quit(control: &mut RpcStream) -> Result<(), RpcError> {
    control.call("Control.Quit", |enc, out| enc.bool(out, true)).await.map(drop)
}

pub fn encode_process(enc: &mut Encoder, out: &mut Vec<u8>, ex: &gob::DkronExecution, config: &std::collections::BTreeMap<String, String>) {
    enc.processor_args(out, ex, config);
}
