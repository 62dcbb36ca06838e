//! `quire watch` end to end: 100 files dropped concurrently into a watched folder (some written
//! slowly in pieces, some renamed into place), the watch stopped with SIGTERM in the middle and
//! started again. Each file must be processed exactly once, and only once complete.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 100;
const DROPPERS: usize = 4;
const SETTLE_S: &str = "1.5";
/// Pause between the pieces of a slow write: well under the settle time.
const PIECE_PAUSE: Duration = Duration::from_millis(400);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A distinct PNG per index: noise, so it does not compress and has pieces worth writing.
fn png(index: usize) -> Vec<u8> {
    let mut state =
        0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let img = image::RgbImage::from_fn(80, 56, |_, _| {
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

fn name(index: usize) -> String {
    format!("file_{index:03}.png")
}

/// How file `index` arrives.
enum Arrival {
    AtOnce,
    SlowPieces,
    RenamedIntoPlace,
}

fn arrival(index: usize) -> Arrival {
    match index % 3 {
        0 => Arrival::AtOnce,
        1 => Arrival::SlowPieces,
        _ => Arrival::RenamedIntoPlace,
    }
}

fn drop_file(dir: &Path, index: usize, bytes: &[u8]) {
    let path = dir.join(name(index));
    match arrival(index) {
        Arrival::AtOnce => std::fs::write(&path, bytes).unwrap(),
        Arrival::SlowPieces => {
            let mut file = std::fs::File::create(&path).unwrap();
            for (i, piece) in bytes.chunks(bytes.len().div_ceil(4)).enumerate() {
                if i > 0 {
                    std::thread::sleep(PIECE_PAUSE);
                }
                file.write_all(piece).unwrap();
                file.flush().unwrap();
            }
        }
        Arrival::RenamedIntoPlace => {
            let tmp = dir.join(format!(".{}.tmp", name(index)));
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
}

fn start_watch(input: &Path, out: &Path, metrics: &Path, log: &Path) -> Child {
    start_watch_settling(input, out, metrics, log, SETTLE_S)
}

fn start_watch_settling(
    input: &Path,
    out: &Path,
    metrics: &Path,
    log: &Path,
    settle: &str,
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "watch",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--model",
            root().join("samples/models/tiny-gemma4").to_str().unwrap(),
        ])
        .args(["--budget", "70", "--max-new-tokens", "4", "--workers", "2"])
        .args(["--settle", settle, "--rescan", "2", "--move"])
        .args(["--metrics", metrics.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start quire watch")
}

fn outputs(out: &Path) -> usize {
    std::fs::read_dir(out).map_or(0, |dir| {
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".png.json"))
            .count()
    })
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM and expects a clean exit 0.
fn stop(mut child: Child, log: &Path) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(180) {
            child.kill().unwrap();
            panic!("quire watch did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(0), "quire watch log:\n{text}");
    assert!(text.contains("stopped:"), "{text}");
}

/// A watched folder, its output folder, the metrics file and one log per watch process.
struct Folders {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
    metrics: PathBuf,
    logs: [PathBuf; 2],
}

impl Folders {
    fn new() -> Folders {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        Folders {
            input,
            out: tmp.path().join("out"),
            metrics: tmp.path().join("quire.prom"),
            logs: [tmp.path().join("watch1.log"), tmp.path().join("watch2.log")],
            _tmp: tmp,
        }
    }
}

fn metric(path: &Path, line_start: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn every_dropped_file_is_processed_exactly_once_and_only_when_complete() {
    let Folders {
        _tmp,
        input,
        out,
        metrics,
        logs,
    } = Folders::new();
    let files: Vec<Vec<u8>> = (0..FILES).map(png).collect();

    let first = start_watch(&input, &out, &metrics, &logs[0]);
    let droppers: Vec<_> = (0..DROPPERS)
        .map(|d| {
            let input = input.clone();
            let files = files.clone();
            std::thread::spawn(move || {
                for index in (d..FILES).step_by(DROPPERS) {
                    drop_file(&input, index, &files[index]);
                    std::thread::sleep(Duration::from_millis(20 + (index as u64 * 37) % 90));
                }
            })
        })
        .collect();

    // Restart in the middle: stop once a third is out, while files keep arriving.
    wait_until("a third of the outputs", Duration::from_secs(300), || {
        outputs(&out) >= FILES / 3
    });
    stop(first, &logs[0]);
    let done_by_first = metric(&metrics, "quire_documents_total{result=\"done\"}");
    assert!(done_by_first >= (FILES / 3) as f64);
    std::thread::sleep(Duration::from_millis(500));
    let second = start_watch(&input, &out, &metrics, &logs[1]);
    for dropper in droppers {
        dropper.join().unwrap();
    }
    wait_until("every output", Duration::from_secs(300), || {
        outputs(&out) == FILES && input.join("done").read_dir().unwrap().count() == FILES
    });
    stop(second, &logs[1]);

    // Each file: one output, from its complete content, no error; its source moved to done/.
    for (index, bytes) in files.iter().enumerate() {
        let json = out.join(format!("{}.json", name(index)));
        let record: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert!(
            record["error"].is_null(),
            "{}: {}",
            name(index),
            record["error"]
        );
        assert_eq!(
            record["content_sha256"].as_str().unwrap(),
            hex::encode(Sha256::digest(bytes)),
            "{} was processed with other content than it ended with",
            name(index)
        );
        assert_eq!(record["page_count"], 1);
        assert_eq!(
            std::fs::read(input.join("done").join(name(index))).unwrap(),
            *bytes
        );
    }
    assert!(!input.join("failed").exists(), "nothing failed");
    let left: Vec<_> = std::fs::read_dir(&input)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "done")
        .collect();
    assert!(left.is_empty(), "left in the watched folder: {left:?}");

    // Exactly once: one state row per file (no row for a partial content), one attempt each,
    // and one "done" line per file across both processes.
    let db = rusqlite::Connection::open(out.join(".quire/state.sqlite")).unwrap();
    let (rows, attempts, done): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), sum(attempts), sum(state = 'done') FROM documents",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, attempts, done),
        (FILES as i64, FILES as i64, FILES as i64)
    );
    let done_lines: usize = logs
        .iter()
        .map(|log| {
            std::fs::read_to_string(log)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("done file_"))
                .count()
        })
        .sum();
    assert_eq!(done_lines, FILES);
    let done_by_second = metric(&metrics, "quire_documents_total{result=\"done\"}");
    assert_eq!(done_by_first + done_by_second, FILES as f64);
    assert_eq!(metric(&metrics, "quire_queue_depth"), 0.0);
    assert_eq!(metric(&metrics, "quire_pages_total"), done_by_second);
}

/// A stop in the middle of a batch finishes the documents already started and leaves the rest,
/// uncounted, for the next start: nothing is lost and nothing is done twice.
#[test]
fn a_stop_mid_batch_leaves_unstarted_documents_for_the_next_start() {
    const N: usize = 40;
    let Folders {
        _tmp,
        input,
        out,
        metrics,
        logs,
    } = Folders::new();
    for index in 0..N {
        std::fs::write(input.join(name(index)), png(1000 + index)).unwrap();
    }
    let first = start_watch_settling(&input, &out, &metrics, &logs[0], "0.2");
    wait_until("the first output", Duration::from_secs(120), || {
        outputs(&out) >= 1
    });
    stop(first, &logs[0]);
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    let done_first = outputs(&out);
    assert!(
        done_first < N,
        "the stop came too late to leave anything: {log}"
    );
    assert!(
        log.contains("not started are left for the next start"),
        "{log}"
    );

    let db = out.join(".quire/state.sqlite");
    let states = || -> Vec<(String, i64, i64)> {
        let db = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = db
            .prepare("SELECT state, count(*), sum(attempts) FROM documents GROUP BY state ORDER BY state")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // Done ones counted once; the batch's unstarted ones queued with no attempt counted (files
    // of later batches were never taken and have no row yet).
    let after_stop = states();
    assert_eq!(
        after_stop[0],
        ("done".to_string(), done_first as i64, done_first as i64)
    );
    assert_eq!(after_stop.len(), 2, "{after_stop:?}");
    assert_eq!(after_stop[1].0, "queued");
    assert_eq!(after_stop[1].2, 0);

    let second = start_watch_settling(&input, &out, &metrics, &logs[1], "0.2");
    wait_until("every output", Duration::from_secs(120), || {
        outputs(&out) == N
    });
    stop(second, &logs[1]);
    assert_eq!(states(), vec![("done".to_string(), N as i64, N as i64)]);
    assert_eq!(input.join("done").read_dir().unwrap().count(), N);
}
