//! Bounded output capture: keeps the last `limit` bytes of a job's output, as Dkron's circbuf does,
//! while counting everything that went through.

/// A ring buffer that keeps the tail of what was written to it.
#[derive(Debug)]
pub struct TailBuffer {
    buf: Vec<u8>,
    limit: usize,
    /// Next write position once the buffer has wrapped.
    head: usize,
    total: u64,
}

impl TailBuffer {
    pub fn new(limit: usize) -> Self {
        // Grow on demand: most jobs print far less than the limit.
        Self { buf: Vec::new(), limit, head: 0, total: 0 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes written so far, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > self.buf.len() as u64
    }

    pub fn write(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.limit == 0 {
            return;
        }
        if data.len() >= self.limit {
            // Only the last `limit` bytes of this chunk can survive.
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.limit..]);
            self.head = 0;
            return;
        }
        let room = self.limit - self.buf.len();
        if room > 0 {
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.write_wrapped(&data[n..]);
        } else {
            self.write_wrapped(data);
        }
    }

    /// Writes into a full buffer, overwriting the oldest bytes.
    fn write_wrapped(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (self.limit - self.head).min(data.len());
            self.buf[self.head..self.head + n].copy_from_slice(&data[..n]);
            self.head = (self.head + n) % self.limit;
            data = &data[n..];
        }
    }

    /// The kept bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.head..]);
        out.extend_from_slice(&self.buf[..self.head]);
        out
    }

    /// The kept bytes followed by `trailer`, within `limit` bytes in all: the trailer (an error
    /// message) always survives, the oldest output gives way to it.
    pub fn contents_with_trailer(&self, trailer: &[u8]) -> Vec<u8> {
        let contents = self.contents();
        let keep = self.limit.saturating_sub(trailer.len()).min(contents.len());
        let mut out = Vec::with_capacity(keep + trailer.len());
        out.extend_from_slice(&contents[contents.len() - keep..]);
        out.extend_from_slice(trailer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_below_the_limit() {
        let mut t = TailBuffer::new(10);
        t.write(b"abc");
        t.write(b"def");
        assert_eq!(t.contents(), b"abcdef");
        assert!(!t.truncated());
        assert_eq!(t.total(), 6);
    }

    #[test]
    fn keeps_the_tail_across_many_small_writes() {
        let mut t = TailBuffer::new(5);
        for chunk in [b"ab".as_slice(), b"cd", b"ef", b"gh", b"i"] {
            t.write(chunk);
        }
        assert_eq!(t.contents(), b"efghi");
        assert!(t.truncated());
        assert_eq!(t.total(), 9);
    }

    #[test]
    fn a_chunk_larger_than_the_limit_keeps_its_tail() {
        let mut t = TailBuffer::new(4);
        t.write(b"xy");
        t.write(b"0123456789");
        assert_eq!(t.contents(), b"6789");
        t.write(b"ab");
        assert_eq!(t.contents(), b"89ab");
    }

    #[test]
    fn matches_a_naive_model() {
        // Every split of a stream must leave the same tail as slicing the whole stream.
        let stream: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        for limit in [1usize, 3, 7, 64, 199, 200, 500] {
            for step in [1usize, 2, 5, 13, 64] {
                let mut t = TailBuffer::new(limit);
                for chunk in stream.chunks(step) {
                    t.write(chunk);
                }
                let start = stream.len().saturating_sub(limit);
                assert_eq!(t.contents(), &stream[start..], "limit {limit} step {step}");
            }
        }
    }

    #[test]
    fn the_trailer_survives_a_full_buffer() {
        let mut t = TailBuffer::new(8);
        t.write(b"0123456789");
        assert_eq!(t.contents_with_trailer(b"ERR\n"), b"6789ERR\n");
        let mut small = TailBuffer::new(8);
        small.write(b"ok");
        assert_eq!(small.contents_with_trailer(b"ERR\n"), b"okERR\n");
    }

    #[test]
    fn zero_limit_keeps_nothing_but_counts() {
        let mut t = TailBuffer::new(0);
        t.write(b"abc");
        assert!(t.contents().is_empty());
        assert_eq!(t.total(), 3);
    }
}
