//! The `files` step: each execution's output in a file of its own, as Dkron's files processor,
//! written by `sinks::files` (atomic, mode 0644, never outside `log_dir`).
//!
//! Keys: `log_dir` (default: `$DKRON_EXEC_LOG_DIR`, else `$XDG_STATE_HOME/dkron-exec/logs`, else
//! `~/.local/state/dkron-exec/logs`, read at each run), `per_job_dir` (false), `keep` (newest N
//! files of the job; needs `per_job_dir`), `full_output` (true: a spooled output is copied whole),
//! `max_size` (`1GB`: at most this many bytes per file, and what the executor spools), `fsync`
//! (false), `forward` (false: the output becomes the file's path).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::{Processed, Step, StepContext};
use crate::config::{Config, Result};
use crate::execution::Execution;
use crate::sinks::files::{self, LogDir, Source, WriteOptions};

pub const KEYS: [&str; 8] = ["log_dir", "per_job_dir", "keep", "full_output", "max_size", "fsync", "forward", "reporting_node"];
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// None: the default folder, resolved at each run (it follows the environment).
    pub log_dir: Option<PathBuf>,
    pub per_job_dir: bool,
    pub keep: Option<usize>,
    pub full_output: bool,
    pub max_size: u64,
    pub fsync: bool,
}

impl FilesConfig {
    pub fn parse(c: &Config<'_>) -> Result<Self> {
        c.only(&KEYS)?;
        let log_dir = match c.get("log_dir") {
            None => None,
            Some(text) => Some(parse_log_dir(c, text)?),
        };
        let keep = match c.non_empty("keep") {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 && v.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(c.error("keep", v, "must be a positive integer (the number of files to keep)")),
            },
        };
        let config = Self {
            log_dir,
            per_job_dir: c.bool("per_job_dir", false)?,
            keep,
            full_output: c.bool("full_output", true)?,
            max_size: c.size("max_size")?.unwrap_or(DEFAULT_MAX_SIZE),
            fsync: c.bool("fsync", false)?,
        };
        if let (Some(_), false) = (config.keep, config.per_job_dir) {
            return Err(c.error(
                "keep",
                c.get("keep").unwrap_or_default(),
                "needs per_job_dir=true: in the flat layout file names do not say which job they belong to",
            ));
        }
        let dir = config.dir().map_err(|why| c.error("log_dir", c.get("log_dir").unwrap_or_default(), why))?;
        if dir.exists() && !dir.is_dir() {
            return Err(c.error("log_dir", &dir.to_string_lossy(), "exists and is not a directory"));
        }
        Ok(config)
    }

    /// Bytes of output the executor should spool for this step (None: the tail is enough).
    pub fn spool_limit(&self) -> Option<u64> {
        self.full_output.then_some(self.max_size)
    }

    /// The file a run of `job` with `key` is written to, as the environment says now (for
    /// reports: "written to PATH").
    pub fn file_path(&self, job: &str, key: &str) -> std::result::Result<PathBuf, String> {
        let dir = self.dir()?;
        files::log_path(&dir, self.per_job_dir.then_some(job), key).map_err(|e| e.to_string())
    }

    /// The folder, absolute, as it is now.
    fn dir(&self) -> std::result::Result<PathBuf, String> {
        let dir = match &self.log_dir {
            Some(d) => d.clone(),
            None => default_log_dir()?,
        };
        if dir.is_absolute() {
            return Ok(dir);
        }
        let cwd = std::env::current_dir().map_err(|e| format!("cannot resolve a relative log_dir: {e}"))?;
        Ok(cwd.join(dir))
    }
}

fn parse_log_dir(c: &Config<'_>, text: &str) -> Result<PathBuf> {
    if text.is_empty() || text.contains('\0') {
        return Err(c.error("log_dir", text, "must be a non-empty path without NUL bytes"));
    }
    let path = expand_home(text).map_err(|why| c.error("log_dir", text, why))?;
    if path.components().any(|p| p == Component::ParentDir) {
        return Err(c.error("log_dir", text, "must not contain a '..' component"));
    }
    // Linux's limits (NAME_MAX, PATH_MAX): a longer folder could never be opened.
    if let Some(long) = path.iter().find(|part| part.len() > NAME_MAX) {
        let why = format!("the component of {} bytes is longer than the {NAME_MAX} a file name may have", long.len());
        return Err(c.error("log_dir", text, why));
    }
    if path.as_os_str().len() >= PATH_MAX {
        return Err(c.error("log_dir", text, format!("longer than the {} bytes a path may have", PATH_MAX - 1)));
    }
    Ok(path)
}

/// `~` and `~/...` are the home folder; `~user` is refused rather than looked up.
fn expand_home(text: &str) -> std::result::Result<PathBuf, String> {
    let Some(rest) = text.strip_prefix('~') else { return Ok(PathBuf::from(text)) };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err("only ~ and ~/ are expanded; write the folder in full".into());
    }
    Ok(home()?.join(rest.trim_start_matches('/')))
}

fn home() -> std::result::Result<PathBuf, String> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => Err("HOME is not set, so ~ cannot be expanded".into()),
    }
}

/// `$DKRON_EXEC_LOG_DIR`, else `$XDG_STATE_HOME/dkron-exec/logs`, else `~/.local/state/dkron-exec/logs`.
pub fn default_log_dir() -> std::result::Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os("DKRON_EXEC_LOG_DIR").filter(|v| !v.is_empty()) {
        return expand_home(&explicit.to_string_lossy());
    }
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(s) => PathBuf::from(s),
        None => home()?.join(".local/state"),
    };
    Ok(state.join("dkron-exec/logs"))
}

pub struct FilesStep {
    config: FilesConfig,
}

impl FilesStep {
    pub fn new(config: FilesConfig) -> Self {
        Self { config }
    }
}

impl Step for FilesStep {
    fn process(&self, e: &Execution, ctx: &StepContext<'_>) -> std::result::Result<Processed, String> {
        let c = &self.config;
        let dir = c.dir()?;
        // The spool is the job's own output: the file gets it even if an earlier step replaced
        // `output`. A spool cut at max_size is copied as it is.
        let source = match ctx.full_output {
            Some((spool, _complete)) if c.full_output => Source::File(spool),
            _ => Source::Bytes(&e.output),
        };
        let job = c.per_job_dir.then_some(e.job_name.as_str());
        let options = WriteOptions { max_size: c.max_size, fsync: c.fsync };
        // A bad key is refused before any folder is created for it.
        files::check_component("execution key", &e.key).map_err(|err| err.to_string())?;
        let folder = LogDir::open(&dir, job).map_err(|err| err.to_string())?;
        let path = folder.write(&e.key, source, options).map_err(|err| err.to_string())?;
        if let Some(keep) = c.keep {
            // The file is written: a failed clean-up must not cost the execution its path.
            let _ = folder.prune(keep);
        }
        Ok(Processed::Sunk { replacement: path_bytes(&path) })
    }
}

fn path_bytes(path: &Path) -> Vec<u8> {
    OsStr::as_bytes(path.as_os_str()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<FilesConfig> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        FilesConfig::parse(&Config::new(&map, "processors.files"))
    }

    #[test]
    fn defaults_and_values() {
        let c = parse(&[("log_dir", "/tmp/x"), ("forward", "true")]).unwrap();
        assert_eq!((c.per_job_dir, c.keep, c.full_output, c.max_size, c.fsync), (false, None, true, DEFAULT_MAX_SIZE, false));
        let c = parse(&[("log_dir", "/tmp/x"), ("per_job_dir", "1"), ("keep", "3"), ("max_size", "2KB")]).unwrap();
        assert_eq!((c.per_job_dir, c.keep, c.max_size), (true, Some(3), 2048));
        assert_eq!(c.spool_limit(), Some(2048));
    }

    #[test]
    fn errors_name_the_field() {
        for (pairs, field) in [
            (&[("keep", "3")][..], "processors.files.keep"),
            (&[("per_job_dir", "true"), ("keep", "0")][..], "processors.files.keep"),
            (&[("log_dir", "a/../b")][..], "processors.files.log_dir"),
            (&[("log_dir", "~bob/logs")][..], "processors.files.log_dir"),
            (&[("log_dir", "")][..], "processors.files.log_dir"),
            (&[("log_dir", "/etc/passwd")][..], "processors.files.log_dir"),
            (&[("max_size", "big")][..], "processors.files.max_size"),
            (&[("fsync", "yes")][..], "processors.files.fsync"),
            (&[("logdir", "/tmp")][..], "processors.files.logdir"),
        ] {
            assert_eq!(parse(pairs).unwrap_err().field, field, "{pairs:?}");
        }
        let long_part = format!("/tmp/{}", "a".repeat(256));
        let long_path = "/tmp/a".repeat(700);
        for text in [&long_part, &long_path] {
            assert_eq!(parse(&[("log_dir", text)]).unwrap_err().field, "processors.files.log_dir");
        }
        assert!(parse(&[("log_dir", &format!("/tmp/{}", "a".repeat(255)))]).is_ok());
    }

    #[test]
    fn writes_the_file_and_replaces_the_output_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let step = FilesStep::new(parse(&[("log_dir", dir), ("per_job_dir", "true")]).unwrap());
        let e = Execution { job_name: "j".into(), key: "17-n".into(), output: b"hello\n".to_vec(), ..Default::default() };
        let ctx = StepContext::new("n");
        let Ok(Processed::Sunk { replacement }) = step.process(&e, &ctx) else { panic!("not sunk") };
        let path = tmp.path().join("j/17-n.log");
        assert_eq!(replacement, path_bytes(&path));
        assert_eq!(std::fs::read(path).unwrap(), b"hello\n");
    }
}
