//! `quire run` and the processes and files around it: its PDF workers die with it, SIGTERM stops
//! a batch cleanly (exit 143, nothing left `running`, unstarted documents queued, no
//! temporaries) so that a rerun completes, a second signal exits at once, and the startup
//! cleanup removes only the temporaries of quire processes that are gone.
#![cfg(target_os = "linux")]

use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `quire run <input> --out <out>` on the tiny model, fast settings, one PDF worker.
fn quire_run(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(root().join("samples/models/tiny-gemma4"))
        .args(["--budget", "70", "--max-new-tokens", "8", "--task", "ocr"])
        .args(["--workers", "1"])
        .args(extra)
        .env_remove("QUIRE_TEST_FAIL_STAGE")
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_HANG_ON");
    cmd
}

/// Starts `cmd` with its stderr read line by line on a thread (echoed for the test log).
fn spawn_reading_stderr(mut cmd: Command) -> (Child, Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quire");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle` (panics if stderr ends first).
fn wait_for_line(lines: &Receiver<String>, needle: &str) {
    loop {
        match lines.recv_timeout(Duration::from_secs(300)) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} on stderr ({e})"),
        }
    }
}

/// The rest of stderr, until it ends (or nothing came for five minutes: a worker that outlived
/// quire holds it open).
fn rest(lines: &Receiver<String>) -> String {
    std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(300)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `/proc/<pid>/stat` fields after the command name: state is [0], the parent pid [1].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Running (not exited, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

/// The `quire pdf-worker` children of `parent`.
fn pdf_workers_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f[1] == parent.to_string()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"pdf-worker"))
        })
        .collect()
}

/// Waits until `pid` is gone; kills it and fails if it is still there after a minute (a
/// bound on a hang, not a timing requirement: it normally goes within milliseconds).
fn assert_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        if Instant::now() > deadline {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} (pid {pid}) outlived quire");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// A folder with `b-hangme.pdf` (the invoice, which the worker hook hangs on) between distinct
/// small PNGs `a.png` and `c.png`..`l.png`.
fn batch_with_a_hanging_pdf(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    for (i, c) in ('a'..='l').enumerate() {
        if c == 'b' {
            std::fs::copy(root().join("samples/invoice.pdf"), dir.join("b-hangme.pdf")).unwrap();
            names.push("b-hangme.pdf".to_string());
            continue;
        }
        let shade = (i * 20) as u8;
        let image = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([shade, (x * 4) as u8, (y * 5) as u8])
        });
        let name = format!("{c}.png");
        image.save(dir.join(&name)).unwrap();
        names.push(name);
    }
    names
}

/// (source, state) of every document in the state store of `out`.
fn states(out: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(out.join(".quire/state.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT source, state FROM documents ORDER BY source")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// Every file under `dir` whose name marks a temporary (ours or anyone's).
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && name != ".quire" {
            found.extend(temporaries(&path));
        } else if name.ends_with(".tmp") || name.starts_with(".quire-tmp") {
            found.push(path);
        }
    }
    found
}

/// A worker stuck in a page must not outlive a quire killed with SIGKILL (which no handler
/// sees): the worker gets SIGKILL when its parent dies.
#[test]
fn pdf_workers_die_with_a_killed_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(root().join("samples/invoice.pdf"), input.join("hangme.pdf")).unwrap();
    let mut cmd = quire_run(&input, &tmp.path().join("out"), &["--page-timeout", "600"]);
    cmd.env("QUIRE_TEST_HANG_ON", "hangme");
    let (mut child, lines) = spawn_reading_stderr(cmd);
    // The hook says when the worker is stuck in the page (not just waiting for a job).
    wait_for_line(&lines, "test hook: hanging on");
    let workers = pdf_workers_of(child.id());
    assert_eq!(workers.len(), 1, "one PDF worker under quire");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_gone(workers[0], "the PDF worker");
}

/// SIGTERM in the middle of a batch: no new document starts, the ones in flight finish, the
/// rest stay queued; exit 143; nothing is left `running` or half-written; a rerun completes.
#[test]
fn sigterm_stops_a_run_cleanly_and_a_rerun_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    let names = batch_with_a_hanging_pdf(&input);
    // With one worker, the batch is stuck on b-hangme.pdf (until its page timeout) when the
    // signal comes: a few documents are in the queues, the others not started.
    let mut cmd = quire_run(&input, &out, &["--page-timeout", "5"]);
    cmd.env("QUIRE_TEST_HANG_ON", "hangme");
    let (mut child, lines) = spawn_reading_stderr(cmd);
    wait_for_line(&lines, "test hook: hanging on");
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    let stderr = rest(&lines);
    assert_eq!(status.code(), Some(143), "SIGTERM: exit 143");
    assert!(
        stderr.contains("SIGTERM: finishing the documents in flight"),
        "says what it does"
    );
    assert!(
        stderr.contains("left queued for the next run"),
        "says what is left"
    );
    assert!(!stderr.contains("panicked"));

    let states = states(&out);
    let mut queued = 0;
    for (source, state) in &states {
        let json = out.join(format!("{source}.json"));
        match state.as_str() {
            "done" => assert!(read_json(&json)["error"].is_null(), "{source}"),
            // The hung document was in flight: its page timed out.
            "failed" => {
                assert_eq!(source, "b-hangme.pdf");
                assert_eq!(read_json(&json)["error"]["kind"], "worker_timeout");
            }
            "queued" => {
                assert!(!json.exists(), "{source}: queued but has an output");
                queued += 1;
            }
            other => panic!("{source}: left {other}"),
        }
    }
    assert!(queued > 0, "the signal came mid-batch: {states:?}");
    assert_eq!(temporaries(&out), Vec::<PathBuf>::new());

    // The rerun (no hang now) completes every document.
    let rerun = quire_run(&input, &out, &[]).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&rerun.stderr));
    assert_eq!(rerun.status.code(), Some(0));
    for name in &names {
        let record = read_json(&out.join(format!("{name}.json")));
        assert!(record["error"].is_null(), "{name}: {record}");
    }
    assert!(crate::states(&out).iter().all(|(_, s)| s == "done"));
}

/// A second signal does not wait for the work in flight: quire exits at once with the
/// signal's code, its worker goes with it, and a rerun redoes what was in flight.
#[test]
fn a_second_sigint_exits_at_once_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    let names = batch_with_a_hanging_pdf(&input);
    let mut cmd = quire_run(&input, &out, &["--page-timeout", "600"]);
    cmd.env("QUIRE_TEST_HANG_ON", "hangme");
    let (mut child, lines) = spawn_reading_stderr(cmd);
    wait_for_line(&lines, "test hook: hanging on");
    let workers = pdf_workers_of(child.id());
    assert_eq!(workers.len(), 1);
    signal(&child, libc::SIGINT);
    wait_for_line(&lines, "SIGINT: finishing the documents in flight");
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT: exit 130");
    assert_gone(workers[0], "the PDF worker");

    let rerun = quire_run(&input, &out, &[]).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&rerun.stderr));
    assert_eq!(rerun.status.code(), Some(0));
    for name in &names {
        assert!(read_json(&out.join(format!("{name}.json")))["error"].is_null());
    }
    assert_eq!(temporaries(&out), Vec::<PathBuf>::new());
}

/// `/proc/<pid>/stat` start time (clock ticks after boot): with the pid, who owns a temporary.
fn start_time(pid: u32) -> String {
    stat_fields(pid).unwrap()[19].clone()
}

/// The startup cleanup removes the temporaries of quire processes that are gone, and nothing
/// else: not a user's hidden `.tmp` file in an input folder under `--out`, not the temporaries
/// of a quire process still running.
#[test]
fn startup_removes_only_temporaries_of_dead_quire_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let inbox = out.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    image::RgbImage::from_pixel(32, 32, image::Rgb([200, 10, 10]))
        .save(inbox.join("red.png"))
        .unwrap();
    // A user's file being written when the run starts.
    let user_file = inbox.join(".scan.pdf.tmp");
    std::fs::write(&user_file, b"half a scan").unwrap();
    // A live owner: this test process.
    let me = std::process::id();
    let live = out.join(format!(
        ".quire-tmp-{me}-{}-Ab12Cd.other.json.tmp",
        start_time(me)
    ));
    std::fs::write(&live, b"being written").unwrap();
    // Dead owners: a process that has exited, and this pid with another start time (a pid
    // reused since its owner died).
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let dead = [
        inbox.join(format!(".quire-tmp-{gone_pid}-1-Xy34Zw.red.png.json.tmp")),
        out.join(format!(".quire-tmp-{me}-1-Qr56St.results.jsonl.tmp")),
    ];
    for path in &dead {
        std::fs::write(path, b"left by a killed run").unwrap();
    }

    let run = quire_run(&inbox, &out, &[]).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(run.status.code(), Some(0));
    assert!(out.join("red.png.json").is_file());
    assert_eq!(std::fs::read(&user_file).unwrap(), b"half a scan");
    assert_eq!(std::fs::read(&live).unwrap(), b"being written");
    for path in &dead {
        assert!(!path.exists(), "{path:?} was left");
    }
}
