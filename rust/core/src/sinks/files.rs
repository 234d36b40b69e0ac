//! The files sink: one log file per execution, `<log_dir>/[<job>/]<key>.log`.
//!
//! Three promises: a job name or key never places a file outside `log_dir`; a reader never sees a
//! partial file (temporary file in the same directory, then `rename`); the file is mode 0644
//! whatever the umask. The content comes from memory or, for outputs larger than the in-memory
//! cap, is streamed from a spool file, so memory stays bounded whatever the output's size.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Every log file ends with this; temporary files do not, so retention never counts them.
pub const LOG_SUFFIX: &str = ".log";
/// Temporary files end with this (and start with a dot, so `ls` hides them).
pub const TEMP_SUFFIX: &str = ".tmp";
/// Dkron's `ioutil.WriteFile(path, out, 0644)`.
pub const FILE_MODE: u32 = 0o644;

/// A job name or key that cannot be one component of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeName {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} cannot name a file inside log_dir: {}", self.what, self.value, self.reason)
    }
}

impl std::error::Error for UnsafeName {}

/// Why a write failed: a refused name, or an I/O error on a given path.
#[derive(Debug)]
pub enum WriteError {
    Unsafe(UnsafeName),
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

impl WriteError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsafe(u) => u.fmt(f),
            Self::Io { op, path, source } => write!(f, "cannot {op} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unsafe(u) => Some(u),
            Self::Io { source, .. } => Some(source),
        }
    }
}

impl From<UnsafeName> for WriteError {
    fn from(u: UnsafeName) -> Self {
        Self::Unsafe(u)
    }
}

/// Checks that `name` is a single, ordinary path component: nothing that could climb out of the
/// directory (`..`, separators, which absolute paths contain too) or cut the path short (NUL).
pub fn check_component(what: &'static str, name: &str) -> Result<(), UnsafeName> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it is a relative directory reference"
    } else if name.contains('/') {
        "it contains a path separator '/'"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(UnsafeName { what, value: name.to_owned(), reason })
}

/// `<log_dir>/<key>.log`, or `<log_dir>/<job>/<key>.log` when `job` is given.
pub fn log_path(log_dir: &Path, job: Option<&str>, key: &str) -> Result<PathBuf, UnsafeName> {
    check_component("execution key", key)?;
    let mut path = log_dir.to_path_buf();
    if let Some(job) = job {
        check_component("job name", job)?;
        path.push(job);
    }
    path.push(format!("{key}{LOG_SUFFIX}"));
    Ok(path)
}

/// What goes into the file.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Bytes(&'a [u8]),
    /// A file streamed with `io::copy` (copy_file_range on Linux): never loaded into memory.
    File(&'a Path),
}

#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// At most this many bytes (the first ones) reach the file.
    pub max_size: u64,
    /// fsync the file and its directory: survives a crash, costs a disk flush per execution.
    pub fsync: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { max_size: u64::MAX, fsync: false }
    }
}

/// Writes one execution's log file (creating the directories it needs) and returns its path.
pub fn write_log(
    log_dir: &Path,
    job: Option<&str>,
    key: &str,
    source: Source<'_>,
    opts: WriteOptions,
) -> Result<PathBuf, WriteError> {
    let path = log_path(log_dir, job, key)?;
    match write_atomic(&path, source, opts) {
        // The directory is created only when missing: no extra system calls on the hot path.
        Err(WriteError::Io { op: "create", source: e, .. }) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().expect("a log path has a parent");
            fs::create_dir_all(dir).map_err(|e| WriteError::io("create directory", dir, e))?;
            write_atomic(&path, source, opts)?;
        }
        result => result?,
    }
    Ok(path)
}

/// Removes the temporary file unless the write went through.
struct TempGuard<'a>(Option<&'a Path>);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    // Unique per call within the process; a twin in another process (a fork shares the counter)
    // makes `create_new` fail with EEXIST, and the writer takes the next number.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{seq}{TEMP_SUFFIX}"))
}

/// Creates a fresh temporary file beside `path` (mode `FILE_MODE` before the umask).
fn create_temp(path: &Path) -> Result<(File, PathBuf), WriteError> {
    loop {
        let tmp = temp_path(path);
        match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(WriteError::io("create", &tmp, e)),
        }
    }
}

/// Writes `source` to `path` so that `path` either does not change or holds the whole content.
pub fn write_atomic(path: &Path, source: Source<'_>, opts: WriteOptions) -> Result<(), WriteError> {
    // Open the source first: a missing spool fails before anything is created.
    let mut input = match source {
        Source::File(p) => Some(File::open(p).map_err(|e| WriteError::io("open", p, e))?),
        Source::Bytes(_) => None,
    };
    let (mut file, tmp) = create_temp(path)?;
    let guard = TempGuard(Some(&tmp));
    // open()'s mode is masked by the umask; fchmod is not.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| WriteError::io("set the mode of", &tmp, e))?;
    match (source, input.as_mut()) {
        (Source::File(p), Some(input)) => {
            io::copy(&mut input.take(opts.max_size), &mut file).map_err(|e| WriteError::io("copy", p, e))?;
        }
        (Source::Bytes(data), _) => {
            let n = usize::try_from(opts.max_size).unwrap_or(usize::MAX).min(data.len());
            file.write_all(&data[..n]).map_err(|e| WriteError::io("write", &tmp, e))?;
        }
        (Source::File(_), None) => unreachable!("the source file was opened above"),
    }
    if opts.fsync {
        file.sync_all().map_err(|e| WriteError::io("fsync", &tmp, e))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(|e| WriteError::io("rename into place", path, e))?;
    std::mem::forget(guard);
    if opts.fsync {
        // The rename is durable once the directory is synced.
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WriteError::io("fsync", dir, e))?;
        }
    }
    Ok(())
}

/// Start time of a Dkron key (`<StartedAt.UnixNano>-<node>`), the natural order of executions.
fn started_ns(name: &str) -> Option<u128> {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    name[..digits].parse().ok()
}

/// Keeps the newest `keep` log files of `dir` and removes the others; returns how many it removed.
///
/// Newest means: latest start time in the key, then latest modification time, then name.
/// Files removed concurrently by another pruner are not an error.
pub fn prune(dir: &Path, keep: usize) -> io::Result<usize> {
    let mut logs: Vec<(Option<u128>, SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(LOG_SUFFIX) || !entry.file_type()?.is_file() {
            continue;
        }
        let mtime = match entry.metadata() {
            Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        logs.push((started_ns(name), mtime, entry.path()));
    }
    if logs.len() <= keep {
        return Ok(0);
    }
    logs.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = 0;
    for (_, _, path) in &logs[keep..] {
        match fs::remove_file(path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn refuses_names_that_leave_the_directory() {
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "x\0y", "a/../../b"] {
            assert!(check_component("job name", bad).is_err(), "{bad:?}");
            assert!(log_path(Path::new("/logs"), None, bad).is_err(), "key {bad:?}");
            assert!(log_path(Path::new("/logs"), Some(bad), "k").is_err(), "job {bad:?}");
        }
        for good in ["job", "..job", "job..", "a.b", "1700000000000000000-node-1", "ünï cødé", "a\\b"] {
            assert!(check_component("job name", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_error_names_the_value() {
        let err = log_path(Path::new("/logs"), Some("../etc"), "k").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("job name") && text.contains("\"../etc\""), "{text}");
    }

    #[test]
    fn paths_follow_dkron_naming() {
        let d = Path::new("/logs");
        assert_eq!(log_path(d, None, "17-n").unwrap(), Path::new("/logs/17-n.log"));
        assert_eq!(log_path(d, Some("job"), "17-n").unwrap(), Path::new("/logs/job/17-n.log"));
    }

    #[test]
    fn writes_atomically_with_mode_0644() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/logs");
        // A strict umask must not change the file's mode.
        let old = unsafe { libc::umask(0o077) };
        let path = write_log(&dir, Some("job"), "1-n", Source::Bytes(b"hello\n"), WriteOptions::default());
        unsafe { libc::umask(old) };
        let path = path.unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(names(&dir.join("job")), ["1-n.log"]);
    }

    #[test]
    fn replaces_an_existing_file_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = WriteOptions::default();
        write_log(tmp.path(), None, "k", Source::Bytes(b"a much longer first version"), opts).unwrap();
        let path = write_log(tmp.path(), None, "k", Source::Bytes(b"short"), opts).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"short");
        assert_eq!(names(tmp.path()), ["k.log"]);
    }

    #[test]
    fn streams_a_file_source_up_to_max_size() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&spool, &data).unwrap();
        let out = tmp.path().join("out");
        let path = write_log(&out, None, "k", Source::File(&spool), WriteOptions::default()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        let opts = WriteOptions { max_size: 1000, fsync: true };
        let path = write_log(&out, None, "k2", Source::File(&spool), opts).unwrap();
        assert_eq!(fs::read(&path).unwrap(), &data[..1000]);
        let path = write_log(&out, None, "k3", Source::Bytes(&data), opts).unwrap();
        assert_eq!(fs::read(&path).unwrap(), &data[..1000]);
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        // Reading a directory fails after the temporary file exists: it must be removed.
        let err = write_log(&out, None, "k", Source::File(tmp.path()), WriteOptions::default()).unwrap_err();
        assert!(matches!(err, WriteError::Io { op: "copy", .. }), "{err}");
        // A missing spool fails before anything is created.
        let missing = tmp.path().join("missing");
        let err = write_log(&out, None, "k", Source::File(&missing), WriteOptions::default()).unwrap_err();
        assert!(matches!(err, WriteError::Io { op: "open", .. }), "{err}");
        assert!(names(&out).is_empty(), "{:?}", names(&out));
    }

    #[test]
    fn a_log_dir_that_is_a_file_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = write_log(&file, None, "k", Source::Bytes(b""), WriteOptions::default()).unwrap_err();
        assert!(matches!(&err, WriteError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOTDIR)), "{err}");
    }

    #[test]
    fn prune_keeps_the_newest_by_start_time() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // Written out of order: the key's start time decides, not the write order.
        for ns in [5, 1, 9, 3, 7, 10] {
            fs::write(d.join(format!("{ns}-node.log")), b"x").unwrap();
        }
        fs::write(d.join(".9-node.log.1.0.tmp"), b"partial").unwrap();
        fs::write(d.join("notes.txt"), b"kept").unwrap();
        assert_eq!(prune(d, 3).unwrap(), 3);
        assert_eq!(names(d), [".9-node.log.1.0.tmp", "10-node.log", "7-node.log", "9-node.log", "notes.txt"]);
        assert_eq!(prune(d, 3).unwrap(), 0);
    }
}
