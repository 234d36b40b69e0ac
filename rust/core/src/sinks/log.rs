//! The log sink: Dkron's output block on the host's stdout (success) or stderr (failure).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};

/// Dkron's `----- BEGIN OUTPUT job=<job> execution=<Key> -----\n<output>\n----- END OUTPUT -----\n`.
pub fn block(job: &str, key: &str, output: &[u8]) -> Vec<u8> {
    const END: &[u8] = b"\n----- END OUTPUT -----\n";
    let head = format!("----- BEGIN OUTPUT job={job} execution={key} -----\n");
    let mut out = Vec::with_capacity(head.len() + output.len() + END.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(output);
    out.extend_from_slice(END);
    out
}

/// Writes `data` to the open descriptor `fd` with a single `write_all`, bypassing every buffer,
/// so that blocks of concurrent jobs do not interleave (beyond what the kernel splits on pipes).
pub fn write_fd(fd: RawFd, data: &[u8]) -> io::Result<()> {
    if fd < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid file descriptor {fd}")));
    }
    // SAFETY: the descriptor is borrowed, not owned: ManuallyDrop keeps File from closing it. A
    // descriptor that is not open makes write(2) fail with EBADF, which is reported.
    let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    file.write_all(data)
}

/// The block for one execution, on `fd`.
pub fn write_block(fd: RawFd, job: &str, key: &str, output: &[u8]) -> io::Result<()> {
    write_fd(fd, &block(job, key, output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_block_is_dkrons() {
        assert_eq!(
            block("backup", "17-node", b"line 1\nline 2\n"),
            b"----- BEGIN OUTPUT job=backup execution=17-node -----\nline 1\nline 2\n\n----- END OUTPUT -----\n"
        );
        assert_eq!(
            block("j", "k", b""),
            b"----- BEGIN OUTPUT job=j execution=k -----\n\n----- END OUTPUT -----\n"
        );
    }

    #[test]
    fn writes_to_a_descriptor_without_closing_it() {
        let tmp = tempfile::tempfile().unwrap();
        write_block(tmp.as_raw_fd(), "j", "k", b"\xffbinary").unwrap();
        write_fd(tmp.as_raw_fd(), b"more").unwrap();
        let mut tmp = tmp;
        use std::io::Seek;
        tmp.rewind().unwrap();
        let mut got = Vec::new();
        tmp.read_to_end(&mut got).unwrap();
        let mut want = block("j", "k", b"\xffbinary");
        want.extend_from_slice(b"more");
        assert_eq!(got, want);
    }

    #[test]
    fn a_bad_descriptor_is_an_error() {
        assert!(write_fd(-1, b"x").is_err());
    }
}
