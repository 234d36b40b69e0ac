//! Go's `encoding/gob`, for exactly what Dkron's net/rpc processor protocol carries: the
//! `rpc.Request`/`rpc.Response` headers, a string, a bool, `ProcessorArgs` and `Execution`.
//!
//! Encoding is by hand per type (our type ids and definitions are fixed, sent once per stream).
//! Decoding is generic over the definitions the plugin sends, because type ids belong to the
//! sending process and must never be hard-coded: a decoder learns them from the stream.

use std::collections::{BTreeMap, HashMap};

/// Gob's predeclared type ids.
const BOOL: i64 = 1;
const INT: i64 = 2;
const UINT: i64 = 3;
const FLOAT: i64 = 4;
const BYTES: i64 = 5;
const STRING: i64 = 6;

/// The ids this host gives its own types (the first user id is 64, as in a Go process).
pub const REQUEST_ID: i64 = 64;
const ARGS_ID: i64 = 65;
const EXECUTION_ID: i64 = 66;
const TIMESTAMP_ID: i64 = 67;
const CONFIG_ID: i64 = 68;

// ---------------------------------------------------------------------------------------------
// Primitive encoding

pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
        return;
    }
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push((256 - (8 - skip)) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

pub fn put_int(out: &mut Vec<u8>, v: i64) {
    let u = if v < 0 { ((!v as u64) << 1) | 1 } else { (v as u64) << 1 };
    put_uint(out, u);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// One message: its length, then the type id and the value (`body` holds both).
fn message(out: &mut Vec<u8>, body: &[u8]) {
    put_uint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A struct value under construction: fields in order, zero values left out (as Go does).
struct StructEnc {
    buf: Vec<u8>,
    last: u64,
}

impl StructEnc {
    fn new(buf: Vec<u8>) -> Self {
        Self { buf, last: 0 }
    }
    fn field(&mut self, n: u64) -> &mut Vec<u8> {
        put_uint(&mut self.buf, n - self.last);
        self.last = n;
        &mut self.buf
    }
    fn string(&mut self, n: u64, s: &str) {
        if !s.is_empty() {
            put_bytes(self.field(n), s.as_bytes());
        }
    }
    fn bytes(&mut self, n: u64, b: &[u8]) {
        if !b.is_empty() {
            put_bytes(self.field(n), b);
        }
    }
    fn uint(&mut self, n: u64, v: u64) {
        if v != 0 {
            put_uint(self.field(n), v);
        }
    }
    fn int(&mut self, n: u64, v: i64) {
        if v != 0 {
            put_int(self.field(n), v);
        }
    }
    fn end(mut self) -> Vec<u8> {
        self.buf.push(0);
        self.buf
    }
}

fn value_head(type_id: i64) -> Vec<u8> {
    let mut b = Vec::new();
    put_int(&mut b, type_id);
    b
}

// ---------------------------------------------------------------------------------------------
// Type definitions (a `wireType` value sent under the negated id)

fn common(s: &mut StructEnc, n: u64, name: &str, id: i64) {
    // CommonType{Name string; Id typeId}
    let mut c = StructEnc::new(std::mem::take(s.field(n)));
    c.string(1, name);
    c.int(2, id);
    s.buf = c.end();
}

fn def_struct(out: &mut Vec<u8>, id: i64, name: &str, fields: &[(&str, i64)]) {
    // wireType{StructT *structType (field 3)}; structType{CommonType; Field []fieldType}
    let mut w = StructEnc::new(value_head(-id));
    let mut st = StructEnc::new(std::mem::take(w.field(3)));
    common(&mut st, 1, name, id);
    let f = st.field(2);
    put_uint(f, fields.len() as u64);
    for (fname, fid) in fields {
        let mut ft = StructEnc::new(std::mem::take(f));
        ft.string(1, fname);
        ft.int(2, *fid);
        *f = ft.end();
    }
    w.buf = st.end();
    message(out, &w.end());
}

fn def_map(out: &mut Vec<u8>, id: i64, name: &str, key: i64, elem: i64) {
    // wireType{MapT *mapType (field 4)}; mapType{CommonType; Key; Elem}
    let mut w = StructEnc::new(value_head(-id));
    let mut mt = StructEnc::new(std::mem::take(w.field(4)));
    common(&mut mt, 1, name, id);
    mt.int(2, key);
    mt.int(3, elem);
    w.buf = mt.end();
    message(out, &w.end());
}

// ---------------------------------------------------------------------------------------------
// The values the host sends

/// `timestamppb.Timestamp`'s exported fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_ns(ns: i64) -> Self {
        Self { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
    pub fn to_ns(self) -> i64 {
        self.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nanos))
    }
}

/// Dkron's `types.Execution` as gob carries it (only the exported fields travel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkronExecution {
    pub job_name: String,
    pub success: bool,
    pub output: Vec<u8>,
    pub node_name: String,
    pub group: i64,
    pub attempt: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// The per-stream, per-direction encoder state: which definitions were sent already.
#[derive(Default)]
pub struct Encoder {
    request_defined: bool,
    args_defined: bool,
}

impl Encoder {
    /// `rpc.Request{ServiceMethod, Seq}`, with its definition the first time.
    pub fn request(&mut self, out: &mut Vec<u8>, method: &str, seq: u64) {
        if !self.request_defined {
            def_struct(out, REQUEST_ID, "Request", &[("ServiceMethod", STRING), ("Seq", UINT)]);
            self.request_defined = true;
        }
        let mut s = StructEnc::new(value_head(REQUEST_ID));
        s.string(1, method);
        s.uint(2, seq);
        message(out, &s.end());
    }

    /// A string argument (`Dispenser.Dispense("processor")`): a non-struct value has a zero
    /// field delta before it.
    pub fn string(&mut self, out: &mut Vec<u8>, v: &str) {
        let mut b = value_head(STRING);
        b.push(0);
        put_bytes(&mut b, v.as_bytes());
        message(out, &b);
    }

    pub fn bool(&mut self, out: &mut Vec<u8>, v: bool) {
        let mut b = value_head(BOOL);
        b.push(0);
        put_uint(&mut b, u64::from(v));
        message(out, &b);
    }

    /// `plugin.ProcessorArgs{Execution; Config}`; the config in key order.
    pub fn processor_args(&mut self, out: &mut Vec<u8>, ex: &DkronExecution, config: &BTreeMap<String, String>) {
        if !self.args_defined {
            def_struct(out, ARGS_ID, "ProcessorArgs", &[("Execution", EXECUTION_ID), ("Config", CONFIG_ID)]);
            def_struct(
                out,
                EXECUTION_ID,
                "Execution",
                &[
                    ("JobName", STRING),
                    ("Success", BOOL),
                    ("Output", BYTES),
                    ("NodeName", STRING),
                    ("Group", INT),
                    ("Attempt", UINT),
                    ("StartedAt", TIMESTAMP_ID),
                    ("FinishedAt", TIMESTAMP_ID),
                ],
            );
            def_struct(out, TIMESTAMP_ID, "Timestamp", &[("Seconds", INT), ("Nanos", INT)]);
            def_map(out, CONFIG_ID, "Config", STRING, STRING);
            self.args_defined = true;
        }
        let mut s = StructEnc::new(value_head(ARGS_ID));
        // A struct-valued field is always sent, even when empty.
        let mut e = StructEnc::new(std::mem::take(s.field(1)));
        e.string(1, &ex.job_name);
        e.uint(2, u64::from(ex.success));
        e.bytes(3, &ex.output);
        e.string(4, &ex.node_name);
        e.int(5, ex.group);
        e.uint(6, u64::from(ex.attempt));
        for (n, ts) in [(7, ex.started_at), (8, ex.finished_at)] {
            if let Some(ts) = ts {
                let mut t = StructEnc::new(std::mem::take(e.field(n)));
                t.int(1, ts.seconds);
                t.int(2, i64::from(ts.nanos));
                e.buf = t.end();
            }
        }
        s.buf = e.end();
        if !config.is_empty() {
            let f = s.field(2);
            put_uint(f, config.len() as u64);
            for (k, v) in config {
                put_bytes(f, k.as_bytes());
                put_bytes(f, v.as_bytes());
            }
        }
        message(out, &s.end());
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A decoded value. Structs keep their field names, as the sender defined them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bytes(Vec<u8>),
    Struct(Vec<(String, Value)>),
    Map(Vec<(Value, Value)>),
    List(Vec<Value>),
}

impl Value {
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum WireType {
    Struct { fields: Vec<(String, i64)> },
    Map { key: i64, elem: i64 },
    List { elem: i64 },
    /// GobEncoder / BinaryMarshaler / TextMarshaler: opaque bytes.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobError(pub String);

impl std::fmt::Display for GobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gob: {}", self.0)
    }
}

fn err<T>(what: impl Into<String>) -> Result<T, GobError> {
    Err(GobError(what.into()))
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, GobError> {
        let v = *self.b.get(self.pos).ok_or_else(|| GobError("message ends early".into()))?;
        self.pos += 1;
        Ok(v)
    }
    fn uint(&mut self) -> Result<u64, GobError> {
        let first = self.byte()?;
        if first < 128 {
            return Ok(u64::from(first));
        }
        let n = 256 - usize::from(first);
        if n > 8 {
            return err(format!("an unsigned integer of {n} bytes"));
        }
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 8) | u64::from(self.byte()?);
        }
        Ok(v)
    }
    fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        Ok(if u & 1 == 1 { !((u >> 1) as i64) } else { (u >> 1) as i64 })
    }
    fn bytes(&mut self) -> Result<Vec<u8>, GobError> {
        let n = self.uint()? as usize;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len()).ok_or_else(|| GobError("a byte string runs past the message".into()))?;
        let v = self.b[self.pos..end].to_vec();
        self.pos = end;
        Ok(v)
    }
    /// Walks a struct's fields: `f(field number, cursor)` reads each.
    fn fields(&mut self, mut f: impl FnMut(u64, &mut Self) -> Result<(), GobError>) -> Result<(), GobError> {
        let mut n = 0u64;
        loop {
            let delta = self.uint()?;
            if delta == 0 {
                return Ok(());
            }
            n += delta;
            f(n, self)?;
        }
    }
}

/// The per-stream, per-direction decoder: the types the sender has defined so far.
#[derive(Default)]
pub struct Decoder {
    types: HashMap<i64, WireType>,
}

/// Up to 10 levels of nested values: Dkron's types need 3.
const MAX_DEPTH: usize = 10;

impl Decoder {
    /// One message (without its length prefix): a definition (None) or a value.
    pub fn message(&mut self, msg: &[u8]) -> Result<Option<Value>, GobError> {
        let mut c = Cursor { b: msg, pos: 0 };
        let id = c.int()?;
        if id < 0 {
            let wt = Self::wire_type(&mut c)?;
            self.types.insert(-id, wt);
            return Ok(None);
        }
        let is_struct = matches!(self.types.get(&id), Some(WireType::Struct { .. }));
        if !is_struct && c.byte()? != 0 {
            return err(format!("a value of type {id} without its leading zero"));
        }
        self.value(&mut c, id, 0).map(Some)
    }

    fn wire_type(c: &mut Cursor) -> Result<WireType, GobError> {
        let mut out = None;
        c.fields(|n, c| {
            out = Some(match n {
                1 | 2 => {
                    // arrayType{CommonType; Elem; Len} / sliceType{CommonType; Elem}
                    let mut elem = 0;
                    c.fields(|k, c| match k {
                        1 => c.fields(|_, c| c.uint().map(drop)),
                        2 => c.int().map(|e| elem = e),
                        3 => c.int().map(drop),
                        _ => err(format!("array/slice type field {k}")),
                    })?;
                    WireType::List { elem }
                }
                3 => {
                    let mut fields = Vec::new();
                    c.fields(|k, c| match k {
                        1 => Self::common(c),
                        2 => {
                            let count = c.uint()?;
                            for _ in 0..count {
                                let (mut name, mut id) = (String::new(), 0);
                                c.fields(|j, c| match j {
                                    1 => c.bytes().map(|b| name = String::from_utf8_lossy(&b).into_owned()),
                                    2 => c.int().map(|i| id = i),
                                    _ => err(format!("fieldType field {j}")),
                                })?;
                                fields.push((name, id));
                            }
                            Ok(())
                        }
                        _ => err(format!("structType field {k}")),
                    })?;
                    WireType::Struct { fields }
                }
                4 => {
                    let (mut key, mut elem) = (0, 0);
                    c.fields(|k, c| match k {
                        1 => Self::common(c),
                        2 => c.int().map(|i| key = i),
                        3 => c.int().map(|i| elem = i),
                        _ => err(format!("mapType field {k}")),
                    })?;
                    WireType::Map { key, elem }
                }
                5..=7 => {
                    c.fields(|_, c| Self::common(c))?;
                    WireType::Opaque
                }
                _ => return err(format!("a type definition of kind {n}")),
            });
            Ok(())
        })?;
        out.ok_or_else(|| GobError("an empty type definition".into()))
    }

    fn common(c: &mut Cursor) -> Result<(), GobError> {
        c.fields(|k, c| match k {
            1 => c.bytes().map(drop),
            2 => c.int().map(drop),
            _ => err(format!("CommonType field {k}")),
        })
    }

    fn value(&self, c: &mut Cursor, id: i64, depth: usize) -> Result<Value, GobError> {
        if depth > MAX_DEPTH {
            return err("values nested too deep");
        }
        Ok(match id {
            BOOL => Value::Bool(c.uint()? != 0),
            INT => Value::Int(c.int()?),
            UINT => Value::Uint(c.uint()?),
            // Floats travel as their bits, byte-reversed.
            FLOAT => Value::Float(f64::from_bits(c.uint()?.swap_bytes())),
            BYTES | STRING => Value::Bytes(c.bytes()?),
            _ => match self.types.get(&id) {
                Some(WireType::Struct { fields }) => {
                    let mut out = Vec::new();
                    c.fields(|n, c| {
                        let (name, fid) = fields.get(n as usize - 1).ok_or_else(|| GobError(format!("field {n} of type {id}")))?;
                        out.push((name.clone(), self.value(c, *fid, depth + 1)?));
                        Ok(())
                    })?;
                    Value::Struct(out)
                }
                Some(WireType::Map { key, elem }) => {
                    let count = c.uint()?;
                    let mut out = Vec::new();
                    for _ in 0..count {
                        out.push((self.value(c, *key, depth + 1)?, self.value(c, *elem, depth + 1)?));
                    }
                    Value::Map(out)
                }
                Some(WireType::List { elem }) => {
                    let count = c.uint()?;
                    let mut out = Vec::new();
                    for _ in 0..count {
                        out.push(self.value(c, *elem, depth + 1)?);
                    }
                    Value::List(out)
                }
                Some(WireType::Opaque) => Value::Bytes(c.bytes()?),
                None => return err(format!("a value of type {id}, which was never defined")),
            },
        })
    }
}

/// Reads Dkron's `Execution` out of a decoded value; a field missing is its zero value.
pub fn execution_of(v: Value) -> Result<DkronExecution, GobError> {
    let Value::Struct(fields) = v else { return err(format!("an Execution that is not a struct: {v:?}")) };
    let mut ex = DkronExecution::default();
    for (name, value) in fields {
        // The output is moved, not copied (it can be megabytes).
        if name == "Output" {
            if let Value::Bytes(b) = value {
                ex.output = b;
                continue;
            }
        }
        let value = &value;
        let bad = || GobError(format!("Execution.{name} has an unexpected value {value:?}"));
        match name.as_str() {
            "JobName" => ex.job_name = value.as_str().ok_or_else(bad)?,
            "Success" => ex.success = matches!(value, Value::Bool(true)),
            "Output" => return Err(bad()),
            "NodeName" => ex.node_name = value.as_str().ok_or_else(bad)?,
            "Group" => ex.group = value.as_i64().ok_or_else(bad)?,
            "Attempt" => ex.attempt = value.as_i64().and_then(|a| u32::try_from(a).ok()).ok_or_else(bad)?,
            "StartedAt" => ex.started_at = Some(timestamp_of(value).ok_or_else(bad)?),
            "FinishedAt" => ex.finished_at = Some(timestamp_of(value).ok_or_else(bad)?),
            _ => {}
        }
    }
    Ok(ex)
}

fn timestamp_of(v: &Value) -> Option<Timestamp> {
    let seconds = v.field("Seconds").map_or(Some(0), Value::as_i64)?;
    let nanos = v.field("Nanos").map_or(Some(0), Value::as_i64)?;
    Some(Timestamp { seconds, nanos: i32::try_from(nanos).ok()? })
}
