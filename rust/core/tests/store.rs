//! The SQLite store: contents, order, retention, group commit, several connections, errors.

use std::sync::{Arc, Barrier};
use std::thread;

use dkron_exec_core::execution::{make_key, Execution};
use dkron_exec_core::store::{SqliteStore, StoreAction};

const BASE_NS: i64 = 1_767_225_600_000_000_000;

fn make(job: &str, n: i64) -> Execution {
    Execution {
        job_name: job.into(),
        key: make_key(BASE_NS + n, "node"),
        started_ns: BASE_NS + n,
        finished_ns: Some(BASE_NS + n + 1_000),
        success: true,
        output: format!("out {n}").into_bytes(),
        node_name: "node".into(),
        attempt: 1,
        ..Execution::default()
    }
}

fn file_store(dir: &tempfile::TempDir, retention: usize) -> SqliteStore {
    SqliteStore::open(dir.path().join("executions.db").to_str().unwrap(), retention).unwrap()
}

fn outputs(es: &[Execution]) -> Vec<String> {
    es.iter().map(|e| String::from_utf8_lossy(&e.output).into_owned()).collect()
}

#[test]
fn every_field_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir, 10);
    let full = Execution {
        job_name: "jöb \"quoted\"".into(),
        key: make_key(BASE_NS + 123, "n-1"),
        started_ns: BASE_NS + 123,
        finished_ns: Some(BASE_NS + 5_000_000_000),
        success: false,
        output: vec![b'a', 0, 0xff, 0xfe, b'\n', 0x80],
        node_name: "n-1".into(),
        group: (1 << 60) + 1,
        attempt: 7,
        exit_code: Some(-9),
        error: Some("signal: killed ✗".into()),
        output_truncated: true,
        output_size: 1 << 40,
        processor_errors: vec!["files: \"nope\"".into(), "ünïcode\n".into()],
        cpu_time_us: Some(1_234_567),
        peak_memory: Some(3 << 30),
    };
    // Nothing optional set, and a key that is not Dkron's: the record's start orders it.
    let bare = Execution {
        job_name: "jöb \"quoted\"".into(),
        key: "custom".into(),
        started_ns: BASE_NS - 7,
        exit_code: None,
        ..Execution::default()
    };
    store.put(&full).unwrap();
    store.put(&bare).unwrap();
    assert_eq!(store.get(&full.job_name, &full.key).unwrap(), Some(full.clone()));
    assert_eq!(store.get(&bare.job_name, "custom").unwrap(), Some(bare.clone()));
    assert_eq!(store.get(&full.job_name, "missing").unwrap(), None);
    assert_eq!(store.list(&full.job_name, None).unwrap(), vec![full, bare]);
}

#[test]
fn put_replaces_the_row_of_the_same_key() {
    let store = SqliteStore::open(":memory:", 10).unwrap();
    let mut e = make("a", 1);
    store.put(&e).unwrap();
    e.output = b"second".to_vec();
    store.put(&e).unwrap();
    assert_eq!(outputs(&store.list("a", None).unwrap()), ["second"]);
}

#[test]
fn list_is_newest_first_and_limited() {
    let store = SqliteStore::open(":memory:", 100).unwrap();
    for n in [3, 1, 4, 0, 2] {
        store.put(&make("a", n)).unwrap();
    }
    store.put(&make("b", 9)).unwrap();
    assert_eq!(outputs(&store.list("a", None).unwrap()), ["out 4", "out 3", "out 2", "out 1", "out 0"]);
    assert_eq!(outputs(&store.list("a", Some(2)).unwrap()), ["out 4", "out 3"]);
    assert!(store.list("a", Some(0)).unwrap().is_empty());
    assert!(store.list("nobody", None).unwrap().is_empty());
    assert_eq!(store.job_names().unwrap(), ["a", "b"]);
}

#[test]
fn put_many_is_one_transaction_and_retention_applies() {
    let store = SqliteStore::open(":memory:", 3).unwrap();
    let batch: Vec<_> = (0..10).map(|n| make("a", n)).chain([make("b", 0)]).collect();
    store.put_many(&batch).unwrap();
    assert_eq!(store.transactions(), 1);
    assert_eq!(outputs(&store.list("a", None).unwrap()), ["out 9", "out 8", "out 7"]);
    assert_eq!(store.list("b", None).unwrap().len(), 1);
    store.put_many(&[]).unwrap();
}

#[test]
fn retention_holds_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(file_store(&dir, 5));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                for n in 0..100 {
                    store.put(&make(&format!("job{}", t % 2), t * 1000 + n)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    // job0 had threads 0 and 2, job1 threads 1 and 3: the newest five are thread 2's / 3's last.
    assert_eq!(
        outputs(&store.list("job0", None).unwrap()),
        (0..5).map(|i| format!("out {}", 2099 - i)).collect::<Vec<_>>()
    );
    assert_eq!(
        outputs(&store.list("job1", None).unwrap()),
        (0..5).map(|i| format!("out {}", 3099 - i)).collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_puts_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(file_store(&dir, 10_000));
    let (threads, puts) = (8usize, 200i64);
    let start = Arc::new(Barrier::new(threads));
    let writers: Vec<_> = (0..threads as i64)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for n in 0..puts {
                    store.put(&make("shared", t * 10_000 + n)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let total = threads as u64 * puts as u64;
    let transactions = store.transactions();
    eprintln!("{total} puts from {threads} threads: {transactions} transactions");
    assert_eq!(store.list("shared", None).unwrap().len() as u64, total);
    assert!(transactions * 3 <= total, "{transactions} transactions for {total} puts");
}

#[test]
fn two_connections_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [Arc::new(file_store(&dir, 1000)), Arc::new(file_store(&dir, 1000))];
    let writers: Vec<_> = (0..4i64)
        .map(|t| {
            let store = stores[t as usize % 2].clone();
            thread::spawn(move || {
                for n in 0..50 {
                    store.put(&make("shared", t * 1000 + n)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    for store in &stores {
        assert_eq!(store.list("shared", None).unwrap().len(), 200);
    }
}

#[test]
fn a_missing_folder_is_named_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/executions.db");
    let message = open_error(&path);
    let expected = format!(
        "cannot open the store {}: unable to open database file (its folder {} does not exist)",
        path.display(),
        dir.path().join("a/b").display()
    );
    assert_eq!(message, expected);
    assert!(!dir.path().join("a").exists(), "no folder is made");
}

#[test]
fn a_closed_store_says_so() {
    let store = SqliteStore::open(":memory:", 10).unwrap();
    store.close();
    store.close();
    let err = store.put(&make("a", 1)).unwrap_err();
    assert_eq!(err.action, StoreAction::Closed);
    assert_eq!(err.to_string(), "the store :memory: is closed");
    assert_eq!(store.list("a", None).unwrap_err().to_string(), "the store :memory: is closed");
}

fn open_error(path: &std::path::Path) -> String {
    let err = SqliteStore::open(path.to_str().unwrap(), 10).err().expect("the store should not open");
    assert_eq!(err.action, StoreAction::Open);
    err.to_string()
}

#[test]
fn a_folder_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let message = open_error(dir.path());
    assert_eq!(
        message,
        format!("cannot open the store {}: unable to open database file (it is a folder)", dir.path().display())
    );
}

#[test]
fn a_file_in_the_way_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    for path in [file.join("executions.db"), file.join("sub/executions.db")] {
        let expected = format!(
            "cannot open the store {}: unable to open database file ({} is not a folder)",
            path.display(),
            file.display()
        );
        assert_eq!(open_error(&path), expected);
    }
}

#[test]
fn a_read_only_folder_is_named() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root ignores permissions");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("read-only");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    let message = open_error(&folder.join("executions.db"));
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        message,
        format!(
            "cannot open the store {}/executions.db: unable to open database file (its folder {} is not writable)",
            folder.display(),
            folder.display()
        )
    );
}

/// Latency of one uncontended put and one list(100); run with
/// `cargo test --release -p dkron-exec-core --test store -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_put_and_list() {
    let dir = tempfile::tempdir().unwrap();
    for path in [":memory:".to_string(), dir.path().join("m.db").to_str().unwrap().to_string()] {
        let store = SqliteStore::open(&path, 100).unwrap();
        let es: Vec<_> = (0..20_000).map(|n| make("a", n)).collect();
        let (started, cpu) = (std::time::Instant::now(), thread_cpu());
        for e in &es {
            store.put(e).unwrap();
        }
        let n = es.len() as u32;
        let (put, put_cpu) = (started.elapsed() / n, (thread_cpu() - cpu) / n);
        let (started, cpu) = (std::time::Instant::now(), thread_cpu());
        for _ in 0..1000 {
            assert_eq!(store.list("a", Some(100)).unwrap().len(), 100);
        }
        let (list, list_cpu) = (started.elapsed() / 1000, (thread_cpu() - cpu) / 1000);
        eprintln!("{path}: put {put:?} ({put_cpu:?} CPU), list(100) {list:?} ({list_cpu:?} CPU)");
    }
}

/// This thread's CPU time: steadier than the wall clock on a shared machine.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_bad_execution_fails_alone() {
    let store = SqliteStore::open(":memory:", 10).unwrap();
    // SQLite integers are signed: this size cannot be stored.
    let bad = Execution { output_size: u64::MAX, ..make("a", 1) };
    let err = store.put(&bad).unwrap_err();
    assert_eq!(err.action, StoreAction::Write);
    assert!(err.to_string().starts_with("cannot write to the store :memory:: "), "{err}");
    // put_many is all or nothing.
    assert!(store.put_many(&[make("a", 2), bad]).is_err());
    assert!(store.list("a", None).unwrap().is_empty());
    store.put(&make("a", 3)).unwrap();
    assert_eq!(outputs(&store.list("a", None).unwrap()), ["out 3"]);
}

#[test]
fn a_file_from_before_the_usage_columns_opens_and_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // The first schema, without cpu_time_us and peak_memory, with one row.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE executions (job_name TEXT NOT NULL, key TEXT NOT NULL, started_ns INTEGER NOT NULL, \
             finished_ns INTEGER, success INTEGER NOT NULL, exit_code INTEGER, error TEXT, node_name TEXT NOT NULL, \
             grp INTEGER NOT NULL, attempt INTEGER NOT NULL, output BLOB NOT NULL, output_truncated INTEGER NOT NULL, \
             output_size INTEGER NOT NULL, processor_errors TEXT NOT NULL, PRIMARY KEY (job_name, key))",
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO executions VALUES ('old', '5-n', 5, 6, 1, 0, NULL, 'n', 5, 1, x'6869', 0, 2, '[]')",
        )
        .unwrap();
    }
    let store = SqliteStore::open(path.to_str().unwrap(), 10).unwrap();
    let old = store.get("old", "5-n").unwrap().unwrap();
    assert_eq!((old.output.as_slice(), old.cpu_time_us, old.peak_memory), (&b"hi"[..], None, None));
    let new = Execution { key: "7-n".into(), started_ns: 7, cpu_time_us: Some(12), peak_memory: Some(34), ..old };
    store.put(&new).unwrap();
    assert_eq!(store.get("old", "7-n").unwrap(), Some(new));
    // A second opening (another process) finds the columns there already.
    drop(store);
    SqliteStore::open(path.to_str().unwrap(), 10).unwrap();
}
