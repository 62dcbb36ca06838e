//! `quire run` and the state store of its output folder (with the tiny random-weight Gemma 4):
//! two runs started together on one `--out` process every document exactly once and the last
//! one writes the complete `results.jsonl`; a document is owned by a lease (owner + heartbeat),
//! not by a PID, so a lease left by a process that is gone is taken over even when its PID is
//! alive, and one still held is reported as busy; a document whose attempts never finished
//! (the process was killed) counts toward `--retries`; inputs that cannot be read are counted as
//! failed by `quire status`; a corrupt state store is refused, never silently started over.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `quire run <input> --out <out>`: ocr on the tiny model, budget 70, 2 new tokens.
fn run_command(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(root().join("samples/models/tiny-gemma4"))
        .args(["--budget", "70", "--workers", "1", "--task", "ocr"])
        .args(["--max-new-tokens", "2"])
        .args(extra)
        .env_remove("QUIRE_TEST_FAIL_STAGE")
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_HANG_ON");
    cmd
}

fn quire_run(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let output = run_command(input, out, extra).output().expect("run quire");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "quire panicked");
    output
}

fn quire(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("run quire");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A distinct small PNG per index (noise, so no two have the same content hash).
fn png(index: usize) -> Vec<u8> {
    let mut state =
        0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let img = image::RgbImage::from_fn(48, 40, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    bytes
}

/// A folder `in` under `tmp` holding `names`, each a distinct PNG.
fn input_with(tmp: &Path, names: &[String]) -> PathBuf {
    let input = tmp.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(input.join(name), png(i)).unwrap();
    }
    input
}

/// The lines of `results.jsonl`, parsed.
fn results(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sources(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_string())
        .collect()
}

fn db(out: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(out.join(".quire/state.sqlite")).unwrap()
}

/// (source, state, attempts) of every document row, by source.
fn rows(out: &Path) -> Vec<(String, String, u32)> {
    let db = db(out);
    let mut stmt = db
        .prepare("SELECT source, state, attempts FROM documents ORDER BY source")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn status_json(out: &Path) -> Value {
    let status = quire(&["status", "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(status.status.code(), Some(0));
    serde_json::from_slice(&status.stdout).unwrap()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A PID that exists (init), and one that cannot.
const LIVE_PID: u32 = 1;
const DEAD_PID: u32 = 2_147_483_646;

/// Makes the row of `source` look like a process on another machine is running it: that
/// `pid`, another owner, a heartbeat `age` seconds old, and `attempts` attempts counted.
fn hand_to_another_process(out: &Path, source: &str, pid: u32, age: f64, attempts: u32) {
    let db = db(out);
    let changed = db
        .execute(
            "UPDATE documents SET state = 'running', pid = ?2, attempts = ?3 WHERE source = ?1",
            rusqlite::params![source, pid, attempts],
        )
        .unwrap();
    assert_eq!(changed, 1, "{source} has a row");
    let has_lease = db
        .prepare("SELECT 1 FROM pragma_table_info('documents') WHERE name = 'heartbeat_at'")
        .unwrap()
        .exists([])
        .unwrap();
    if has_lease {
        db.execute(
            "UPDATE documents SET owner = 'otherhost:1:1', heartbeat_at = ?2, process = NULL
             WHERE source = ?1",
            rusqlite::params![source, now() - age],
        )
        .unwrap();
    }
}

/// Documents processed by a run, from its summary line `N documents (N ok, 0 failed)`.
fn processed_by(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains(" documents (") && l.contains(" ok, "))
        .unwrap_or_else(|| panic!("no summary line in\n{stderr}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// Two `quire run` started together on the same folder: each document is claimed by exactly
/// one of them (one attempt each in the store; the runs' processed counts add up to the number
/// of documents), and `results.jsonl` lists every document once both have exited. Exit codes:
/// 0 for a run that ends with every document finished; 4 for one that ends while the other
/// still holds documents (they are not failed, and not in its summary yet). The run that
/// finishes last sees everything finished, so at least one exits 0.
#[test]
fn two_runs_on_one_folder_process_each_document_exactly_once() {
    const DOCUMENTS: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..DOCUMENTS).map(|i| format!("doc_{i:03}.png")).collect();
    let input = input_with(tmp.path(), &names);
    let out = tmp.path().join("out");
    let logs = [tmp.path().join("run1.log"), tmp.path().join("run2.log")];
    let children: Vec<_> = logs
        .iter()
        .map(|log| {
            run_command(&input, &out, &[])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .expect("start quire run")
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code())
        .collect();
    let logs: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    for log in &logs {
        eprintln!("----\n{log}");
        assert!(!log.contains("panicked"), "quire panicked");
    }

    let rows = rows(&out);
    assert_eq!(rows.len(), DOCUMENTS);
    for (source, state, attempts) in &rows {
        assert_eq!(
            (state.as_str(), *attempts),
            ("done", 1),
            "{source}: processed once"
        );
    }
    let processed: usize = logs.iter().map(|l| processed_by(l)).sum();
    assert_eq!(processed, DOCUMENTS, "the two runs together");

    let listed = results(&out);
    assert_eq!(
        sources(&listed).into_iter().collect::<BTreeSet<_>>(),
        names.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(listed.len(), DOCUMENTS, "each document once");
    assert!(listed.iter().all(|r| r["error"].is_null()));

    for (code, log) in codes.iter().zip(&logs) {
        match code {
            Some(0) => assert!(!log.contains("busy in another run"), "{log}"),
            Some(4) => assert!(log.contains("busy in another run"), "{log}"),
            other => panic!("exit {other:?}:\n{log}"),
        }
    }
    assert!(codes.contains(&Some(0)), "{codes:?}");
}

/// Three documents run once, all done: the setup of the lease tests.
fn three_done(tmp: &Path) -> (PathBuf, PathBuf) {
    let names: Vec<String> = ["a.png", "b.png", "c.png"].map(String::from).to_vec();
    let input = input_with(tmp, &names);
    let out = tmp.join("out");
    assert_eq!(quire_run(&input, &out, &[]).status.code(), Some(0));
    (input, out)
}

/// A document held by another run (its lease fresh) is not processed, and not silently
/// skipped either: the run names it as busy, leaves it out of `results.jsonl` and exits 4.
#[test]
fn a_document_held_by_another_run_is_reported_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = three_done(tmp.path());
    hand_to_another_process(&out, "a.png", LIVE_PID, 1.0, 1);
    let busy = quire_run(&input, &out, &[]);
    assert_eq!(busy.status.code(), Some(4), "busy documents: exit 4");
    let log = stderr(&busy);
    assert!(log.contains("1 documents are busy in another run"), "{log}");
    assert!(log.contains("BUSY a.png"), "{log}");
    assert_eq!(sources(&results(&out)), ["b.png", "c.png"]);
    assert_eq!(rows(&out)[0], ("a.png".into(), "running".into(), 1));
}

/// A row is owned by a lease, not a PID: one whose heartbeat stopped an hour ago is taken over
/// even though its PID (1) exists (PID reuse, another PID namespace, another machine).
#[test]
fn a_stale_lease_is_taken_over_even_when_its_pid_is_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = three_done(tmp.path());
    hand_to_another_process(&out, "a.png", LIVE_PID, 3600.0, 1);
    let taken = quire_run(&input, &out, &[]);
    assert_eq!(taken.status.code(), Some(0));
    assert_eq!(rows(&out)[0], ("a.png".into(), "done".into(), 2));
    assert_eq!(sources(&results(&out)), ["a.png", "b.png", "c.png"]);
}

/// A document whose attempts never finished (the process was killed on it, e.g. out of
/// memory) counts toward `--retries` like a failure: after 3 with `--retries 2` it is given up
/// as `retries_exhausted`, written like any failure, and counted by `quire status`.
#[test]
fn a_document_left_unfinished_too_often_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = three_done(tmp.path());
    hand_to_another_process(&out, "b.png", DEAD_PID, 3600.0, 3);
    std::fs::remove_file(out.join("b.png.json")).unwrap();
    let given_up = quire_run(&input, &out, &["--retries", "2"]);
    assert_eq!(given_up.status.code(), Some(3), "a failed document: exit 3");
    let listed = results(&out);
    assert_eq!(sources(&listed), ["a.png", "b.png", "c.png"]);
    let b = &listed[1];
    assert_eq!(b["error"]["kind"], "retries_exhausted", "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 attempts") && message.contains("did not finish"),
        "{message}"
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("b.png.json")).unwrap()).unwrap();
    assert_eq!(
        json["error"], b["error"],
        "its record is written like any failure"
    );
    assert_eq!(rows(&out)[1], ("b.png".into(), "failed".into(), 3));
    let status = status_json(&out);
    assert_eq!(status["counts"]["failed"], 1);
    assert_eq!(status["failures"][0]["source"], "b.png");
}

/// Inputs that fail at intake (not a supported format, empty) are failed documents for the
/// run's summary line and for `quire status`; fixed, they are done and no longer counted.
#[test]
fn inputs_that_cannot_be_read_are_counted_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with(tmp.path(), &["good.png".to_string()]);
    std::fs::write(input.join("notes.jpg"), "not a document").unwrap();
    std::fs::write(input.join("empty.pdf"), "").unwrap();
    let out = tmp.path().join("out");
    let result = quire_run(&input, &out, &[]);
    assert_eq!(result.status.code(), Some(3));
    let log = stderr(&result);
    assert!(log.contains("3 documents (1 ok, 2 failed)"), "{log}");
    let status = status_json(&out);
    assert_eq!(status["counts"]["done"], 1);
    assert_eq!(status["counts"]["failed"], 2);
    let failures = status["failures"].as_array().unwrap();
    let failed: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f["source"].as_str().unwrap(), f["error"].as_str().unwrap()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "empty.pdf");
    assert!(failed[0].1.starts_with("empty_file: "), "{failed:?}");
    assert_eq!(failed[1].0, "notes.jpg");
    assert!(
        failed[1].1.starts_with("unsupported_format: "),
        "{failed:?}"
    );
    let text = quire(&["status", "--out", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("done 1  failed 2"), "{text}");
    assert!(text.contains("FAILED notes.jpg"), "{text}");

    // Fixed: replaced by a readable document, and the empty one removed.
    std::fs::write(input.join("notes.jpg"), png(7)).unwrap();
    std::fs::remove_file(input.join("empty.pdf")).unwrap();
    assert_eq!(quire_run(&input, &out, &[]).status.code(), Some(0));
    let status = status_json(&out);
    assert_eq!(status["counts"]["done"], 2);
    // empty.pdf is gone from the inputs but its failure stays on record, like any failure.
    assert_eq!(status["counts"]["failed"], 1);
    assert_eq!(status["failures"][0]["source"], "empty.pdf");
}

/// A state store that is not a database (garbage, or emptied) is refused with exit 2, naming
/// the file and saying how to recover, and left as it is: never silently started over.
#[test]
fn a_corrupt_state_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with(tmp.path(), &["a.png".to_string()]);
    let out = tmp.path().join("out");
    assert_eq!(quire_run(&input, &out, &[]).status.code(), Some(0));
    let state = out.join(".quire/state.sqlite");
    let size = std::fs::metadata(&state).unwrap().len();

    let garbage = b"this is not a database\n".repeat(size as usize / 23 + 1);
    for (what, bytes) in [("garbage", garbage), ("emptied", Vec::new())] {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(out.join(format!(".quire/state.sqlite{suffix}")));
        }
        std::fs::write(&state, &bytes).unwrap();
        for result in [
            quire_run(&input, &out, &[]),
            quire(&["status", "--out", out.to_str().unwrap()]),
        ] {
            assert_eq!(result.status.code(), Some(2), "{what}");
            let log = stderr(&result);
            assert!(log.contains(state.to_str().unwrap()), "{what}: {log}");
            assert!(log.contains("is corrupt"), "{what}: {log}");
            assert!(log.contains("move"), "{what}: {log}");
            assert_eq!(
                std::fs::read(&state).unwrap(),
                bytes,
                "{what}: left as it is"
            );
        }
    }

    // Recovering as told: the folder moved aside, the document is processed again.
    std::fs::rename(out.join(".quire"), out.join(".quire.corrupt")).unwrap();
    assert_eq!(quire_run(&input, &out, &[]).status.code(), Some(0));
    assert_eq!(rows(&out), [("a.png".into(), "done".into(), 1)]);
}

/// An output folder that cannot be written is refused with exit 2, naming it. Root writes
/// into read-only folders, so as root the folder is made read-only by a read-only bind mount
/// in a mount namespace of the run's own (`unshare`); where neither works the test says so.
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_output_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with(tmp.path(), &["a.png".to_string()]);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let run = run_command(&input, &out, &[]);
    let result = if std::fs::write(out.join("probe"), b"").is_err() {
        Command::new(run.get_program())
            .args(run.get_args())
            .output()
            .unwrap()
    } else {
        let mut ro = Command::new("unshare");
        ro.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#)
            .arg(&out)
            .arg(run.get_program())
            .args(run.get_args());
        match ro.output() {
            Ok(result) if !stderr(&result).contains("mount") => result,
            other => {
                eprintln!("skipped: no way to make a read-only folder here: {other:?}");
                return;
            }
        }
    };
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = stderr(&result);
    eprintln!("{log}");
    assert_eq!(result.status.code(), Some(2));
    assert!(
        log.contains(&format!("output folder {} is not writable", out.display())),
        "{log}"
    );
    assert!(!out.join(".quire").exists());
}
