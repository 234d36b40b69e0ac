//! The little of gRPC a go-plugin host needs, on HTTP/2 (`h2`) over unix sockets, plaintext:
//! unary calls, a server-streamed response read message by message, a client stream kept open
//! (the broker), and a server for one unary method (StatusHelper's `Update`).

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request, Response};

use super::proto::{frame, Deframer};

/// How a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcError {
    /// The plugin answered with a non-OK gRPC status.
    Status { code: u32, message: String },
    /// The connection or the stream broke (the plugin died, most likely).
    Transport(String),
    /// The answer did not follow gRPC.
    Protocol(String),
    /// This host could not do its part of the call (no socket for a callback server, say).
    Host(String),
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcError::Status { code, message } => write!(f, "gRPC status {code} ({}): {message}", code_name(*code)),
            GrpcError::Transport(e) | GrpcError::Protocol(e) | GrpcError::Host(e) => f.write_str(e),
        }
    }
}

pub const UNIMPLEMENTED: u32 = 12;

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

fn transport(what: &str, e: h2::Error) -> GrpcError {
    GrpcError::Transport(format!("{what}: {e}"))
}

/// A gRPC request's head: POST, the method's path, the content type (the authority is not
/// looked at over a unix socket).
fn request(path: &str) -> Request<()> {
    Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a constant request head")
}

/// Starts a call: the request stream to write messages on, and the response to come.
pub async fn start(
    send: &SendRequest<Bytes>,
    path: &str,
) -> Result<(h2::client::ResponseFuture, SendStream<Bytes>), GrpcError> {
    let mut send = send.clone().ready().await.map_err(|e| transport("the connection is gone", e))?;
    send.send_request(request(path), false).map_err(|e| transport(&format!("{path} not sent"), e))
}

/// Sends one message on a request stream, ending it if `end`.
pub fn send_message(stream: &mut SendStream<Bytes>, msg: &[u8], end: bool) -> Result<(), GrpcError> {
    stream.send_data(Bytes::from(frame(msg)), end).map_err(|e| transport("a message not sent", e))
}

/// The status a response ended with: grpc-status in the trailers, or in the headers of a
/// trailers-only response. None if there is none there.
fn status(headers: &HeaderMap) -> Option<Result<(), GrpcError>> {
    let code = headers.get("grpc-status")?;
    let code: u32 = match code.to_str().ok().and_then(|c| c.parse().ok()) {
        Some(c) => c,
        None => return Some(Err(GrpcError::Protocol(format!("a grpc-status that is not a number: {code:?}")))),
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
    Some(Err(GrpcError::Status { code, message }))
}

/// grpc-message is percent-encoded UTF-8.
fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response being read: its messages, then its status.
pub struct Responses {
    body: Option<RecvStream>,
    deframer: Deframer,
    /// Set when the headers already carried the status (a trailers-only response).
    done: Option<Result<(), GrpcError>>,
}

impl Responses {
    /// Waits for the response's headers.
    pub async fn start(response: h2::client::ResponseFuture, max: usize) -> Result<Self, GrpcError> {
        let response = response.await.map_err(|e| transport("no response", e))?;
        if response.status() != http::StatusCode::OK {
            return Err(GrpcError::Protocol(format!("HTTP status {} instead of 200", response.status())));
        }
        let done = status(response.headers());
        Ok(Self { body: Some(response.into_body()), deframer: Deframer::new(max), done })
    }

    /// The next message; None once the response ended with status OK.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, GrpcError> {
        loop {
            if let Some(msg) = self.deframer.next_message().map_err(GrpcError::Protocol)? {
                return Ok(Some(msg));
            }
            if let Some(done) = self.done.clone() {
                return done.map(|()| None);
            }
            let Some(body) = self.body.as_mut() else { return Ok(None) };
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.deframer.push(&chunk);
                }
                Some(Err(e)) => return Err(transport("the response broke", e)),
                None => {
                    if self.deframer.pending() > 0 {
                        return Err(GrpcError::Protocol(format!("the response ended inside a message ({} bytes of it)", self.deframer.pending())));
                    }
                    let trailers = body.trailers().await.map_err(|e| transport("the response's trailers broke", e))?;
                    let found = trailers.as_ref().and_then(status);
                    self.done = Some(found.unwrap_or_else(|| Err(GrpcError::Protocol("the response ended without a grpc-status".into()))));
                }
            }
        }
    }
}

/// A unary call: one message each way.
pub async fn unary(send: &SendRequest<Bytes>, path: &str, msg: &[u8], max: usize) -> Result<Vec<u8>, GrpcError> {
    let (response, mut stream) = start(send, path).await?;
    send_message(&mut stream, msg, true)?;
    let mut responses = Responses::start(response, max).await?;
    let answer = responses.next().await?.ok_or_else(|| GrpcError::Protocol(format!("{path} answered OK without a message")))?;
    if responses.next().await?.is_some() {
        return Err(GrpcError::Protocol(format!("{path} answered more than one message")));
    }
    Ok(answer)
}

/// What a server's method makes of a request: a message, or a status (code, message).
pub type Handled = Result<Vec<u8>, (u32, String)>;

/// Serves gRPC unary calls on one connection: `handle(path, request)` answers each. Ends when
/// the connection does.
pub async fn serve<S, F, Fut>(io: S, max: usize, handle: F) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn(String, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Handled> + Send,
{
    let mut conn = h2::server::handshake(io).await.map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    while let Some(next) = conn.accept().await {
        let (request, respond) = next.map_err(|e| format!("HTTP/2: {e}"))?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = answer(request, respond, max, handle).await;
        });
    }
    Ok(())
}

async fn answer<F, Fut>(request: Request<RecvStream>, mut respond: h2::server::SendResponse<Bytes>, max: usize, handle: F) -> Result<(), h2::Error>
where
    F: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Handled>,
{
    let path = request.uri().path().to_string();
    let mut body = request.into_body();
    let mut deframer = Deframer::new(max);
    let mut msg = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        deframer.push(&chunk);
        match deframer.next_message() {
            Ok(Some(m)) => {
                msg = Some(m);
                break;
            }
            Ok(None) => {}
            Err(e) => return trailers_only(&mut respond, 13, &e),
        }
    }
    let Some(msg) = msg else { return trailers_only(&mut respond, 13, "the request carried no message") };
    match handle(path, msg).await {
        Ok(reply) => {
            let head = Response::builder().status(200).header("content-type", "application/grpc").body(()).expect("constant");
            let mut stream = respond.send_response(head, false)?;
            stream.send_data(Bytes::from(frame(&reply)), false)?;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers)
        }
        Err((code, message)) => trailers_only(&mut respond, code, &message),
    }
}

/// A response that is only a status (headers that end the stream).
fn trailers_only(respond: &mut h2::server::SendResponse<Bytes>, code: u32, message: &str) -> Result<(), h2::Error> {
    let safe: String = message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    let head = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", safe.replace('%', "%25"))
        .body(())
        .expect("a printable status");
    respond.send_response(head, true).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"a%20b%3A%25"), "a b:%");
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
