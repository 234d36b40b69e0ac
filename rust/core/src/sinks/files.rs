//! The files sink: one log file per execution, `<log_dir>/[<job>/]<key>.log`.
//!
//! Three promises: a job name, a key or a link planted beneath `log_dir` never places a file
//! outside `log_dir` (names are single components, looked up with `openat` in the folder held
//! open, links not followed); a reader never sees a
//! partial file (temporary file in the same directory, then `rename`); the file is mode 0644
//! whatever the umask. The content comes from memory or, for outputs larger than the in-memory
//! cap, is streamed from a spool file, so memory stays bounded whatever the output's size.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{fchmod, fsync, mkdirat, openat, renameat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

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

/// Why a write failed: a refused name, a refused path, or an I/O error on a given path.
#[derive(Debug)]
pub enum WriteError {
    Unsafe(UnsafeName),
    Refused { path: PathBuf, reason: &'static str },
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
            Self::Refused { path, reason } => write!(f, "refused to write in {}: {reason}", path.display()),
            Self::Io { op, path, source } => write!(f, "cannot {op} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unsafe(u) => Some(u),
            Self::Refused { .. } => None,
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
    // A bad key is refused before any folder is created for it.
    check_component("execution key", key)?;
    LogDir::open(log_dir, job)?.write(key, source, opts)
}

/// The folder an execution's file goes into, held open: every later name is looked up in it
/// (`openat`, `renameat`), so nothing planted in the tree afterwards can redirect a write.
///
/// `log_dir` is the operator's choice and may be, or pass through, a symbolic link. The job's
/// folder is a name taken from the job and is never followed if it is a link: a link planted at
/// `<log_dir>/<job>` would otherwise send files anywhere the host may write.
pub struct LogDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl LogDir {
    /// Opens `log_dir` (created if missing) and, with `job`, its folder `<job>` (created if missing).
    pub fn open(log_dir: &Path, job: Option<&str>) -> Result<Self, WriteError> {
        if let Some(job) = job {
            check_component("job name", job)?;
        }
        let root = match open_dir(CWD, log_dir, OFlags::empty()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(log_dir).map_err(|e| WriteError::io("create directory", log_dir, e))?;
                open_dir(CWD, log_dir, OFlags::empty())
            }
            other => other,
        }
        .map_err(|e| WriteError::io("open directory", log_dir, e))?;
        let Some(job) = job else { return Ok(Self { fd: root, path: log_dir.to_path_buf() }) };
        let path = log_dir.join(job);
        let fd = match open_dir(&root, job, OFlags::NOFOLLOW) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match mkdirat(&root, job, Mode::from_bits_truncate(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(WriteError::io("create directory", &path, e.into())),
                }
                open_dir(&root, job, OFlags::NOFOLLOW)
            }
            other => other,
        };
        let fd = fd.map_err(|e| refused_or_io(&root, job, &path, e))?;
        Ok(Self { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `<key>.log` so that it either does not change or holds the whole content.
    pub fn write(&self, key: &str, source: Source<'_>, opts: WriteOptions) -> Result<PathBuf, WriteError> {
        check_component("execution key", key)?;
        let name = format!("{key}{LOG_SUFFIX}");
        let path = self.path.join(&name);
        // Open the source first: a missing spool fails before anything is created.
        let mut input = match source {
            Source::File(p) => Some(File::open(p).map_err(|e| WriteError::io("open", p, e))?),
            Source::Bytes(_) => None,
        };
        let (mut file, tmp) = self.create_temp(&name)?;
        let guard = TempGuard { dir: &self.fd, name: Some(&tmp) };
        let tmp_path = self.path.join(&tmp);
        // open()'s mode is masked by the umask; fchmod is not.
        fchmod(&file, Mode::from_bits_truncate(FILE_MODE))
            .map_err(|e| WriteError::io("set the mode of", &tmp_path, e.into()))?;
        match (source, input.as_mut()) {
            (Source::File(p), Some(input)) => {
                io::copy(&mut input.take(opts.max_size), &mut file).map_err(|e| WriteError::io("copy", p, e))?;
            }
            (Source::Bytes(data), _) => {
                let n = usize::try_from(opts.max_size).unwrap_or(usize::MAX).min(data.len());
                file.write_all(&data[..n]).map_err(|e| WriteError::io("write", &tmp_path, e))?;
            }
            (Source::File(_), None) => unreachable!("the source file was opened above"),
        }
        if opts.fsync {
            file.sync_all().map_err(|e| WriteError::io("fsync", &tmp_path, e))?;
        }
        drop(file);
        // rename replaces whatever entry has the name, a planted link included, without following it.
        renameat(&self.fd, tmp.as_str(), &self.fd, name.as_str())
            .map_err(|e| WriteError::io("rename into place", &path, e.into()))?;
        std::mem::forget(guard);
        if opts.fsync {
            // The rename is durable once the directory is synced.
            fsync(&self.fd).map_err(|e| WriteError::io("fsync", &self.path, e.into()))?;
        }
        Ok(path)
    }

    /// Creates a fresh temporary file beside `name` (mode `FILE_MODE` before the umask).
    fn create_temp(&self, name: &str) -> Result<(File, String), WriteError> {
        // Unique per call within the process; a twin in another process (a fork shares the
        // counter) makes O_EXCL fail with EEXIST, and the writer takes the next number.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        loop {
            let tmp = format!(".{name}.{}{TEMP_SUFFIX}", SEQ.fetch_add(1, Ordering::Relaxed));
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match openat(&self.fd, tmp.as_str(), flags, Mode::from_bits_truncate(FILE_MODE)) {
                Ok(fd) => return Ok((File::from(fd), tmp)),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(WriteError::io("create", &self.path.join(&tmp), e.into())),
            }
        }
    }

    /// Keeps the newest `keep` log files and removes the others; returns how many it removed.
    ///
    /// Newest means: latest start time in the key, then latest modification time, then name.
    /// Only regular files are counted or removed; files removed concurrently by another pruner
    /// are not an error.
    pub fn prune(&self, keep: usize) -> io::Result<usize> {
        let mut logs: Vec<(Option<u128>, (i64, i64), String)> = Vec::new();
        for entry in Dir::read_from(&self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if !name.ends_with(LOG_SUFFIX) {
                continue;
            }
            let stat = match statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                continue;
            }
            logs.push((started_ns(name), (stat.st_mtime, stat.st_mtime_nsec as i64), name.to_owned()));
        }
        if logs.len() <= keep {
            return Ok(0);
        }
        logs.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = 0;
        for (_, _, name) in &logs[keep..] {
            match unlinkat(&self.fd, name.as_str(), AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}

/// Mode of a job's folder before the umask (as `mkdir -p`).
const DIR_MODE: u32 = 0o755;

fn open_dir<Fd: AsFd>(dir: Fd, path: impl rustix::path::Arg, extra: OFlags) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra;
    Ok(openat(dir, path, flags, Mode::empty())?)
}

/// Why the job's folder could not be opened: a link or a non-folder is refused in words.
fn refused_or_io(root: &OwnedFd, job: &str, path: &Path, err: io::Error) -> WriteError {
    let kind = statat(root, job, AtFlags::SYMLINK_NOFOLLOW).map(|s| FileType::from_raw_mode(s.st_mode));
    match kind {
        Ok(FileType::Symlink) => WriteError::Refused { path: path.to_path_buf(), reason: "it is a symbolic link, and links under log_dir are not followed" },
        Ok(FileType::Directory) | Err(_) => WriteError::io("open directory", path, err),
        Ok(_) => WriteError::Refused { path: path.to_path_buf(), reason: "it exists and is not a directory" },
    }
}

/// Removes the temporary file unless the write went through.
struct TempGuard<'a> {
    dir: &'a OwnedFd,
    name: Option<&'a str>,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name {
            let _ = unlinkat(self.dir, name, AtFlags::empty());
        }
    }
}

/// Start time of a Dkron key (`<StartedAt.UnixNano>-<node>`), the natural order of executions.
fn started_ns(name: &str) -> Option<u128> {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    name[..digits].parse().ok()
}

/// Keeps the newest `keep` log files of `dir` (see `LogDir::prune`); returns how many it removed.
pub fn prune(dir: &Path, keep: usize) -> io::Result<usize> {
    LogDir { fd: open_dir(CWD, dir, OFlags::empty())?, path: dir.to_path_buf() }.prune(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn a_link_planted_as_the_job_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (logs, outside) = (tmp.path().join("logs"), tmp.path().join("outside"));
        fs::create_dir_all(&logs).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("job")).unwrap();
        let err = write_log(&logs, Some("job"), "k", Source::Bytes(b"x"), WriteOptions::default()).unwrap_err();
        assert!(matches!(err, WriteError::Refused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("symbolic link") && text.contains(&logs.join("job").display().to_string()), "{text}");
        assert!(names(&outside).is_empty(), "{:?}", names(&outside));
        // A file where the folder should be is refused too.
        fs::write(logs.join("file"), b"x").unwrap();
        let err = write_log(&logs, Some("file"), "k", Source::Bytes(b"x"), WriteOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_link_planted_as_the_log_file_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let logs = tmp.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        std::os::unix::fs::symlink(&target, logs.join("k.log")).unwrap();
        let path = write_log(&logs, None, "k", Source::Bytes(b"new"), WriteOptions::default()).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_log_dir_that_is_a_link_is_followed() {
        // log_dir is the operator's choice: a link there is deliberate.
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("logs")).unwrap();
        write_log(&tmp.path().join("logs"), Some("job"), "k", Source::Bytes(b"x"), WriteOptions::default()).unwrap();
        assert_eq!(fs::read(real.join("job/k.log")).unwrap(), b"x");
    }

    #[test]
    fn prune_leaves_links_and_their_targets_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target.log");
        fs::write(&target, b"precious").unwrap();
        let d = tmp.path().join("logs");
        fs::create_dir_all(&d).unwrap();
        for ns in [1, 2, 3] {
            fs::write(d.join(format!("{ns}-node.log")), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&target, d.join("0-node.log")).unwrap();
        assert_eq!(prune(&d, 1).unwrap(), 2);
        assert_eq!(names(&d), ["0-node.log", "3-node.log"]);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
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
