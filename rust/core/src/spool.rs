//! Spooling to disk the output that outgrows the in-memory tail, so that a processor (files) can
//! receive a job's complete output while the host keeps only the tail in memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::capture::TailBuffer;

/// Where and how much to spool.
#[derive(Debug, Clone)]
pub struct SpoolSpec {
    pub dir: PathBuf,
    /// Bytes written to the spool at the most; what comes after is counted, not kept.
    pub limit: u64,
}

/// The in-memory tail plus, once the output outgrows it, a spool file holding all of it.
#[derive(Debug)]
pub struct Capture {
    tail: TailBuffer,
    spec: Option<SpoolSpec>,
    spool: Option<(File, PathBuf)>,
    spooled: u64,
    spool_error: Option<String>,
}

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

fn spool_name(dir: &Path) -> PathBuf {
    let seq = SPOOL_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".dkron-exec-spool-{}-{seq}", std::process::id()))
}

impl Capture {
    pub fn new(limit: usize, spec: Option<SpoolSpec>) -> Self {
        Self { tail: TailBuffer::new(limit), spec, spool: None, spooled: 0, spool_error: None }
    }

    pub fn tail(&self) -> &TailBuffer {
        &self.tail
    }

    pub fn write(&mut self, data: &[u8]) {
        let outgrows = self.tail.total() + data.len() as u64 > self.tail.limit() as u64;
        if outgrows && self.spool.is_none() && self.spool_error.is_none() {
            if let Some(spec) = self.spec.clone() {
                // Until now the tail held everything: it becomes the head of the spool.
                let head = self.tail.contents();
                if let Err(e) = self.open_spool(&spec).and_then(|_| self.append(&head)) {
                    self.fail(e);
                }
            }
        }
        if self.spool.is_some() {
            if let Err(e) = self.append(data) {
                self.fail(e);
            }
        }
        self.tail.write(data);
    }

    fn open_spool(&mut self, spec: &SpoolSpec) -> std::io::Result<()> {
        std::fs::create_dir_all(&spec.dir)?;
        let path = spool_name(&spec.dir);
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        self.spool = Some((file, path));
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        let (Some((file, _)), Some(spec)) = (self.spool.as_mut(), self.spec.as_ref()) else { return Ok(()) };
        let room = spec.limit.saturating_sub(self.spooled);
        let n = (data.len() as u64).min(room) as usize;
        file.write_all(&data[..n])?;
        self.spooled += n as u64;
        Ok(())
    }

    fn fail(&mut self, err: std::io::Error) {
        self.spool_error = Some(err.to_string());
        if let Some((_, path)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Ends the capture: the tail (with `trailer` last) and the spool file, if one was made, with
    /// the trailer appended there too.
    pub fn finish(mut self, trailer: Option<&[u8]>) -> Finished {
        let output = match trailer {
            Some(t) => self.tail.contents_with_trailer(t),
            None => self.tail.contents(),
        };
        if let (Some(t), Some((file, _))) = (trailer, self.spool.as_mut()) {
            if let Err(e) = file.write_all(t) {
                self.fail(e);
            }
        }
        let total = self.tail.total();
        let spool_complete = self.spool.is_some() && self.spooled >= total;
        Finished {
            output,
            total,
            truncated: self.tail.truncated(),
            spool: self.spool.map(|(_, p)| p),
            spool_complete,
            spool_error: self.spool_error,
        }
    }
}

#[derive(Debug)]
pub struct Finished {
    pub output: Vec<u8>,
    pub total: u64,
    pub truncated: bool,
    pub spool: Option<PathBuf>,
    /// False when the spool limit cut the output short.
    pub spool_complete: bool,
    pub spool_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, limit: u64) -> Option<SpoolSpec> {
        Some(SpoolSpec { dir: dir.to_path_buf(), limit })
    }

    #[test]
    fn small_output_makes_no_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::new(100, spec(dir.path(), 1 << 20));
        c.write(b"hello");
        let f = c.finish(None);
        assert_eq!(f.output, b"hello");
        assert!(f.spool.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn large_output_is_spooled_whole_with_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::new(10, spec(dir.path(), 1 << 20));
        let data: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for chunk in data.chunks(7) {
            c.write(chunk);
        }
        let f = c.finish(Some(b"ERR\n"));
        let spooled = std::fs::read(f.spool.as_ref().unwrap()).unwrap();
        assert_eq!(&spooled[..1000], &data[..]);
        assert_eq!(&spooled[1000..], b"ERR\n");
        assert_eq!(f.output.len(), 10);
        assert!(f.output.ends_with(b"ERR\n"));
        assert!(f.spool_complete && f.truncated);
    }

    #[test]
    fn the_spool_limit_cuts_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::new(4, spec(dir.path(), 8));
        c.write(b"0123456789abcdef");
        let f = c.finish(None);
        assert_eq!(std::fs::read(f.spool.unwrap()).unwrap(), b"01234567");
        assert!(!f.spool_complete);
        assert_eq!(f.output, b"cdef");
    }

    #[test]
    fn an_unwritable_spool_dir_keeps_the_tail_and_reports() {
        let mut c = Capture::new(4, spec(Path::new("/proc/no-such-dir"), 100));
        c.write(b"0123456789");
        let f = c.finish(None);
        assert_eq!(f.output, b"6789");
        assert!(f.spool.is_none() && f.spool_error.is_some());
    }
}
