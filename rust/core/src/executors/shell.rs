//! The built-in `shell` executor: its `executor_config`, checked when the job is loaded (Dkron
//! checks only `timeout` and `mem_limit` and fails the other mistakes at run time), and the
//! engine's `JobSpec` made from it when the job runs.

mod credentials;
mod env;
mod operators;

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::config::{Config, ConfigError};
use crate::job::JobSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct ShellConfig {
    pub command: String,
    /// Run through `/bin/sh -c`; otherwise the command is split into words and exec'd.
    pub shell: bool,
    /// Added to the host's environment, in order (later entries win).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// None when unset or zero (Dkron's "no timeout").
    pub timeout: Option<Duration>,
    /// Bytes of resident memory for the whole process tree.
    pub mem_limit: Option<u64>,
    /// `(user, group)`, names or numeric ids.
    pub su: Option<(String, Option<String>)>,
    /// Written to the command's stdin; None when unset or empty.
    pub payload: Option<Vec<u8>>,
    /// Leave the processes the job started running when it ends on its own (a job that starts
    /// a daemon); by default everything it started dies with it.
    pub keep_daemons: bool,
}

const NUL_REASON: &str = "must not contain a NUL byte: a process cannot be given one";

/// Go's `base64.StdEncoding`: padding required, bits after the last full byte ignored.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

impl ShellConfig {
    pub const KEYS: [&'static str; 9] =
        ["command", "shell", "env", "cwd", "timeout", "mem_limit", "su", "payload", "keep_daemons"];

    /// The shell executor's executor_config; errors name `executor_config.<key>` (the prefix of
    /// `config`). Unknown keys are kept, as Dkron ignores them; an empty value is unset.
    pub fn parse(config: &Config<'_>) -> Result<Self, ConfigError> {
        let command = config.get("command").unwrap_or_default();
        if py_trim(command).is_empty() {
            return Err(config.error("command", command, "the shell executor needs a non-empty command"));
        }
        // What becomes a process's argv, cwd, environment or user cannot hold a NUL byte:
        // refused here rather than failing every run.
        for key in ["command", "cwd", "env", "su"] {
            if let Some(v) = config.get(key).filter(|v| v.contains('\0')) {
                return Err(config.error(key, v, NUL_REASON));
            }
        }
        let shell = match config.non_empty("shell") {
            None => false,
            Some(_) => config.bool("shell", false)?,
        };
        if let Some(op) = operators::first_unquoted_operator(command).filter(|_| !shell) {
            let why = format!(
                "holds the shell operator '{op}' outside quotes, which only a shell understands: set \"shell\": true to run the command through /bin/sh, or quote the '{op}'"
            );
            return Err(config.error("command", command, why));
        }
        let keep_daemons = match config.non_empty("keep_daemons") {
            None => false,
            Some(_) => config.bool("keep_daemons", false)?,
        };
        let timeout = config.duration("timeout")?;
        let mem_limit = config.size("mem_limit")?;
        let su = match config.non_empty("su") {
            None => None,
            Some(v) => Some(parse_su(v).ok_or_else(|| config.error("su", v, "expected user or user:group"))?),
        };
        let payload = match config.non_empty("payload") {
            None => None,
            Some(v) => {
                let bytes = decode_payload(v).map_err(|why| config.error("payload", v, format!("not valid base64: {why}")))?;
                Some(bytes).filter(|b| !b.is_empty())
            }
        };
        let env = match config.non_empty("env") {
            None => Vec::new(),
            Some(text) => env::parse(config, text)?,
        };
        // A JSON env can spell NUL as an escape (\u0000) that the raw text check above misses.
        if let Some((name, value)) = env.iter().find(|(n, v)| n.contains('\0') || v.contains('\0')) {
            return Err(config.error("env", config.get("env").unwrap_or_default(), format!("{NUL_REASON} (variable {name:?}={value:?})")));
        }
        Ok(Self {
            command: command.to_string(),
            shell,
            env,
            cwd: config.non_empty("cwd").map(PathBuf::from),
            timeout,
            mem_limit,
            su,
            payload,
            keep_daemons,
        })
    }

    /// The engine's spec: argv (split like a POSIX shell, or `/bin/sh -c`), the config's env then
    /// `ENV_JOB_NAME`, and `su` resolved to ids. Output limits and spooling are the caller's.
    pub fn to_spec(&self, job_name: &str) -> Result<JobSpec, String> {
        let argv = if self.shell {
            vec!["/bin/sh".to_string(), "-c".to_string(), self.command.clone()]
        } else {
            let words = shell_words::split(&self.command)
                .map_err(|e| format!("shell: cannot split command {:?}: {e}", self.command))?;
            if words.is_empty() {
                return Err(format!("shell: command {:?} has no words", self.command));
            }
            words
        };
        let (uid, gid) = credentials::resolve(self.su.as_ref())?;
        let mut spec = JobSpec::new(argv);
        // Dkron appends the job's variables after the agent's, then ENV_JOB_NAME.
        spec.env = self.env.clone();
        spec.env.push(("ENV_JOB_NAME".to_string(), job_name.to_string()));
        spec.cwd = self.cwd.clone();
        spec.stdin = self.payload.clone();
        spec.timeout = self.timeout;
        spec.mem_limit = self.mem_limit;
        spec.uid = uid;
        spec.gid = gid;
        spec.keep_daemons = self.keep_daemons;
        spec.label = self.command.clone();
        spec.job_name = job_name.to_string();
        Ok(spec)
    }
}

/// Whitespace as Python's `str.isspace` sees it (the job model's rule): Unicode's, plus the
/// ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_trim(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

/// `user` or `user:group`: no spaces, no empty part, at most one colon.
fn parse_su(text: &str) -> Option<(String, Option<String>)> {
    let part_ok = |part: &str| !part.is_empty() && !part.contains(is_py_space);
    match text.split_once(':') {
        None => part_ok(text).then(|| (text.to_string(), None)),
        Some((user, group)) => {
            (part_ok(user) && part_ok(group) && !group.contains(':')).then(|| (user.to_string(), Some(group.to_string())))
        }
    }
}

/// Base64 as Go's `StdEncoding` reads it: CR and LF anywhere are skipped, anything else outside
/// the alphabet (or missing padding) is refused.
fn decode_payload(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    GO_STD_BASE64.decode(compact).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ShellConfig, ConfigError> {
        let mut map: HashMap<String, String> = HashMap::from([("command".to_string(), "/bin/true".to_string())]);
        map.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ShellConfig::parse(&Config::new(&map, "executor_config"))
    }

    fn minimal(command: &str) -> ShellConfig {
        ShellConfig {
            command: command.to_string(),
            shell: false,
            env: Vec::new(),
            cwd: None,
            timeout: None,
            mem_limit: None,
            su: None,
            payload: None,
            keep_daemons: false,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        assert_eq!(parse(&[]), Ok(minimal("/bin/true")));
    }

    #[test]
    fn a_full_dkron_config() {
        let cfg = parse(&[
            ("command", "/usr/local/bin/backup --full"),
            ("shell", "false"),
            ("env", "PGHOST=db,PGPORT=5432"),
            ("cwd", "/srv"),
            ("timeout", "1h30m"),
            ("mem_limit", "512MB"),
        ])
        .unwrap();
        assert_eq!(
            cfg,
            ShellConfig {
                env: pairs(&[("PGHOST", "db"), ("PGPORT", "5432")]),
                cwd: Some(PathBuf::from("/srv")),
                timeout: Some(Duration::from_secs(5400)),
                mem_limit: Some(512 << 20),
                ..minimal("/usr/local/bin/backup --full")
            }
        );
    }

    #[test]
    fn all_keys() {
        let cfg = parse(&[
            ("shell", "true"),
            ("cwd", "/work"),
            ("timeout", "1m30s"),
            ("mem_limit", "1024"),
            ("su", "nobody:nogroup"),
            ("payload", "aGVsbG8K"),
        ])
        .unwrap();
        assert!(cfg.shell);
        assert_eq!(cfg.cwd, Some(PathBuf::from("/work")));
        assert_eq!((cfg.timeout, cfg.mem_limit), (Some(Duration::from_secs(90)), Some(1024)));
        assert_eq!(cfg.su, Some(("nobody".to_string(), Some("nogroup".to_string()))));
        assert_eq!(cfg.payload.as_deref(), Some(&b"hello\n"[..]));
        assert!(!cfg.keep_daemons);
        assert!(parse(&[("keep_daemons", "true")]).unwrap().keep_daemons);
        assert!(parse(&[("keep_daemons", "true")]).unwrap().to_spec("j").unwrap().keep_daemons);
        let err = parse(&[("keep_daemons", "sometimes")]).unwrap_err();
        assert_eq!((err.field.as_str(), err.value.as_str()), ("executor_config.keep_daemons", "sometimes"));
    }

    #[test]
    fn edge_values() {
        let cfg = parse(&[("timeout", "0"), ("su", "root"), ("payload", ""), ("cwd", "")]).unwrap();
        assert_eq!(cfg.timeout, None, "Dkron: a zero timeout is no timeout");
        assert_eq!(cfg.su, Some(("root".to_string(), None)));
        assert_eq!((cfg.payload, cfg.cwd), (None, None));
        assert_eq!(parse(&[("payload", "aGVs\nbG8=")]).unwrap().payload.as_deref(), Some(&b"hello"[..]));
        assert_eq!(parse(&[("payload", "aGVs\r\nbG8=\n")]).unwrap().payload.as_deref(), Some(&b"hello"[..]));
        assert_eq!(parse(&[("payload", "\n")]).unwrap().payload, None);
        // Go's StdEncoding ignores the unused bits of the last character.
        assert_eq!(parse(&[("payload", "QR==")]).unwrap().payload.as_deref(), Some(&b"A"[..]));
        // Empty strings are Dkron's unset.
        let cfg = parse(&[("shell", ""), ("env", ""), ("timeout", ""), ("mem_limit", ""), ("su", "")]).unwrap();
        assert_eq!(cfg, minimal("/bin/true"));
    }

    #[test]
    fn unknown_keys_are_kept_as_dkron_ignores_them() {
        assert_eq!(parse(&[("x", "whatever"), ("Shell", "maybe")]), Ok(minimal("/bin/true")));
    }

    #[test]
    fn booleans_are_go_s() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse(&[("shell", t)]).unwrap().shell, "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(!parse(&[("shell", f)]).unwrap().shell, "{f}");
        }
    }

    #[test]
    fn env_forms() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("A=1", &[("A", "1")]),
            ("A=1,B=x=y,,C=", &[("A", "1"), ("B", "x=y"), ("C", "")]),
            (r#"["A=1,2", "B=two words"]"#, &[("A", "1,2"), ("B", "two words")]),
            (r#"  ["A=1","B=2"]  "#, &[("A", "1"), ("B", "2")]),
            (r#"{"A": "1", "PORT": 8080, "DEBUG": true}"#, &[("A", "1"), ("PORT", "8080"), ("DEBUG", "true")]),
            (r#"{"X": "a,b"}"#, &[("X", "a,b")]),
            (r#"{"Z": 1, "A": 2}"#, &[("Z", "1"), ("A", "2")]),
            (r#"{"F": 1.5, "E": 1e2, "OFF": false, "N": [1, {"b": 2, "a": "x"}]}"#, &[
                ("F", "1.5"),
                ("E", "100.0"),
                ("OFF", "false"),
                ("N", r#"[1,{"b":2,"a":"x"}]"#),
            ]),
            (r#"{"A": "1", "A": "2"}"#, &[("A", "2")]),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&[("env", text)]).map(|c| c.env), Ok(pairs(expected)), "{text}");
        }
    }

    #[test]
    fn invalid_values_name_the_field_and_quote_the_value() {
        type Case = (&'static [(&'static str, &'static str)], &'static str, &'static str);
        let cases: &[Case] = &[
            (&[("command", "")], "executor_config.command", ""),
            (&[("command", "  \t")], "executor_config.command", "  \t"),
            (&[("shell", "yes")], "executor_config.shell", "yes"),
            (&[("shell", " true")], "executor_config.shell", " true"),
            (&[("timeout", "10")], "executor_config.timeout", "10"),
            (&[("timeout", "-1s")], "executor_config.timeout", "-1s"),
            (&[("timeout", "forever")], "executor_config.timeout", "forever"),
            (&[("mem_limit", "0")], "executor_config.mem_limit", "0"),
            (&[("mem_limit", "1PB")], "executor_config.mem_limit", "1PB"),
            (&[("su", "a:b:c")], "executor_config.su", "a:b:c"),
            (&[("su", ":wheel")], "executor_config.su", ":wheel"),
            (&[("su", "user:")], "executor_config.su", "user:"),
            (&[("su", "a b")], "executor_config.su", "a b"),
            (&[("payload", "not base64!")], "executor_config.payload", "not base64!"),
            (&[("payload", "aGk")], "executor_config.payload", "aGk"),
            (&[("payload", "aGk=\t")], "executor_config.payload", "aGk=\t"),
            (&[("payload", "QQ==QQ==")], "executor_config.payload", "QQ==QQ=="),
            (&[("env", "NOEQUALS")], "executor_config.env", "NOEQUALS"),
            (&[("env", "=v")], "executor_config.env", "=v"),
            (&[("env", r#"["A=1", 2]"#)], "executor_config.env", r#"["A=1", 2]"#),
            (&[("env", "[broken")], "executor_config.env", "[broken"),
            (&[("env", r#"{"A=B": "1"}"#)], "executor_config.env", r#"{"A=B": "1"}"#),
            (&[("env", r#"{"": "1"}"#)], "executor_config.env", r#"{"": "1"}"#),
            (&[("env", r#"{"A": null}"#)], "executor_config.env.A", "null"),
            (&[("command", "echo a\0b")], "executor_config.command", "echo a\0b"),
            (&[("cwd", "/tmp/\0")], "executor_config.cwd", "/tmp/\0"),
            (&[("env", "A=\0")], "executor_config.env", "A=\0"),
            (&[("env", r#"{"A": "x\u0000"}"#)], "executor_config.env", r#"{"A": "x\u0000"}"#),
            (&[("env", r#"["A\u0000=1"]"#)], "executor_config.env", r#"["A\u0000=1"]"#),
            (&[("su", "ro\0ot")], "executor_config.su", "ro\0ot"),
        ];
        for (pairs, field, value) in cases {
            let err = parse(pairs).expect_err(&format!("{pairs:?} should fail"));
            assert_eq!((err.field.as_str(), err.value.as_str()), (*field, *value), "{pairs:?}: {err}");
        }
        let err = parse(&[("payload", "aGk")]).unwrap_err();
        assert!(err.reason.starts_with("not valid base64: "), "{err}");
        let err = parse(&[("command", "")]).unwrap_err();
        assert_eq!(err.to_string(), "executor_config.command: the shell executor needs a non-empty command (got \"\")");
    }

    #[test]
    fn unquoted_shell_operators_need_shell_true() {
        let err = parse(&[("command", "echo one && echo two")]).unwrap_err();
        assert_eq!(err.field, "executor_config.command");
        assert!(err.reason.contains("'&&'") && err.reason.contains("\"shell\": true"), "{err}");
        let err = parse(&[("command", "date > now"), ("shell", "false")]).unwrap_err();
        assert!(err.reason.contains("'>'"), "{err}");
        assert!(parse(&[("command", "echo one && echo two"), ("shell", "true")]).is_ok());
        assert!(parse(&[("command", "echo 'one && two' \\;")]).is_ok());
    }

    #[test]
    fn argv_is_split_like_a_posix_shell() {
        let spec = |command: &str| minimal(command).to_spec("job-1").map(|s| s.argv);
        let cases: &[(&str, &[&str])] = &[
            ("/bin/echo a  b", &["/bin/echo", "a", "b"]),
            (r#"echo "two words" 'single $HOME' \"q\""#, &["echo", "two words", "single $HOME", "\"q\""]),
            (r"echo a\ b", &["echo", "a b"]),
            (r#"echo "a\"b""#, &["echo", "a\"b"]),
            ("echo ''", &["echo", ""]),
        ];
        for (command, argv) in cases {
            assert_eq!(spec(command), Ok(argv.iter().map(|s| s.to_string()).collect()), "{command}");
        }
        let err = spec("echo 'unbalanced").unwrap_err();
        assert!(err.starts_with("shell: cannot split command \"echo 'unbalanced\": "), "{err}");
        assert!(!err.contains('\n'));
        let shell = ShellConfig { shell: true, ..minimal("echo $HOME | wc -c") };
        assert_eq!(shell.to_spec("j").unwrap().argv, ["/bin/sh", "-c", "echo $HOME | wc -c"]);
    }

    #[test]
    fn spec_carries_env_limits_and_the_command_as_written() {
        let cfg = ShellConfig {
            env: pairs(&[("A", "1"), ("ENV_JOB_NAME", "user's")]),
            cwd: Some(PathBuf::from("/tmp")),
            timeout: Some(Duration::from_secs(5)),
            mem_limit: Some(1 << 20),
            payload: Some(b"in".to_vec()),
            ..minimal("echo   'hi'")
        };
        let spec = cfg.to_spec("backup").unwrap();
        assert_eq!(spec.env, pairs(&[("A", "1"), ("ENV_JOB_NAME", "user's"), ("ENV_JOB_NAME", "backup")]));
        assert_eq!(spec.label, "echo   'hi'");
        assert_eq!(spec.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(spec.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!((spec.timeout, spec.mem_limit), (Some(Duration::from_secs(5)), Some(1 << 20)));
        assert_eq!((spec.uid, spec.gid), (None, None));
        let defaults = JobSpec::new(vec![]);
        assert_eq!((spec.output_limit, spec.pipe_grace), (defaults.output_limit, defaults.pipe_grace));
        assert!(spec.spool.is_none());
    }

    #[test]
    fn su_resolves_users_and_groups() {
        let su = |user: &str, group: Option<&str>| {
            let cfg = ShellConfig { su: Some((user.to_string(), group.map(str::to_string))), ..minimal("true") };
            cfg.to_spec("j").map(|s| (s.uid, s.gid))
        };
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        for (user, group) in [("root", None), ("0", Some("0")), ("root", Some("root")), ("0", None)] {
            match su(user, group) {
                Ok(ids) => {
                    assert!(root, "only root may su to root");
                    assert_eq!(ids, (Some(0), Some(0)));
                }
                Err(e) => {
                    assert!(!root, "{e}");
                    assert_eq!(e, format!("shell: su {user:?} needs the host to run as root"));
                }
            }
        }
        assert_eq!(su("no-such-user-dkron", None), Err("shell: su: no such user \"no-such-user-dkron\"".to_string()));
        assert_eq!(su("4294967295", None), Err("shell: su: no such user \"4294967295\"".to_string()));
        assert_eq!(su("root", Some("no-such-group-dkron")), Err("shell: su: no such group \"no-such-group-dkron\"".to_string()));
    }
}
