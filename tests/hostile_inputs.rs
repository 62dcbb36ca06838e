//! `quire run` over hostile inputs and surroundings (the tiny Gemma 4, budget 70, `ocr`): a
//! truncated JPEG, decompression bombs, a long multi-page TIFF, FIFOs, sockets and broken
//! symlinks in an input folder, an output disk that fills up or is read-only, and a password
//! that must not show in the process list. Each bad thing gets a record naming it and its error
//! kind (or, for entries that are not files, a warning), the other documents are processed,
//! nothing is left half written or marked done without its outputs, and a run after the fault
//! is fixed completes. Inputs deleted between the walk and their processing are covered in
//! `pipeline/tests/vanished_inputs.rs`.
//!
//! The disk tests mount small tmpfs file systems and need root; elsewhere they say why they
//! skip and pass.

use serde_json::Value;
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> PathBuf {
    root().join("samples").join(name)
}

/// `quire run <input> --out <out>` on the tiny model, `ocr` at budget 70, one worker.
fn quire_run(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(sample("models/tiny-gemma4"))
        .args(["--budget", "70", "--workers", "1", "--task", "ocr"])
        .args(extra)
        .env_remove("QUIRE_PASSWORD")
        .env_remove("QUIRE_TEST_HANG_ON")
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_FAIL_STAGE");
    if !extra.contains(&"--max-new-tokens") {
        cmd.args(["--max-new-tokens", "8"]);
    }
    cmd
}

/// A finished command: its exit code, stderr, and the peak resident memory of its process.
struct Ran {
    code: Option<i32>,
    stderr: String,
    max_rss_bytes: u64,
}

/// Runs `cmd` to its end (stdout and stderr go to files, so nothing blocks on a full pipe) and
/// reaps it with `wait4` for its peak memory. A command still running after `limit` is killed
/// and the test fails: a guard against hanging forever (on a FIFO, say), not a timing check.
fn run(mut cmd: Command, limit: Duration) -> Ran {
    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("stderr");
    cmd.stdout(std::fs::File::create(logs.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    // Reaped below by `wait4`, which `Child::wait` does not give (it has no resource usage).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("start quire");
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + limit;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain system call on our own child; the pointers are to live locals.
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(got >= 0, "wait4: {}", std::io::Error::last_os_error());
        if got == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!(
                "quire did not finish within {limit:?} (it hangs); stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "quire panicked");
    Ran {
        code: ExitStatus::from_raw(status).code(),
        stderr,
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    }
}

const MINUTES: Duration = Duration::from_secs(300);

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The records of `results.jsonl`, by source.
fn results(out: &Path) -> Vec<(String, Value)> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (r["source"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

fn record_of(out: &Path, source: &str) -> Value {
    results(out)
        .into_iter()
        .find(|(s, _)| s == source)
        .unwrap_or_else(|| panic!("{source} is not in results.jsonl"))
        .1
}

/// The document processed fine: its record has no error and its Markdown is there.
fn assert_done(out: &Path, source: &str) {
    let record = read_json(&out.join(format!("{source}.json")));
    assert!(record["error"].is_null(), "{source}: {}", record["error"]);
    assert!(record["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(out.join(format!("{source}.md")).is_file(), "{source}.md");
    assert!(record_of(out, source)["error"].is_null());
}

/// The document failed with `kind`: in its JSON and in `results.jsonl`, no transcript, and the
/// summary names it. Returns the error.
fn assert_failed(ran: &Ran, out: &Path, source: &str, kind: &str) -> Value {
    let record = read_json(&out.join(format!("{source}.json")));
    assert_eq!(record["error"]["kind"], kind, "{source}: {record}");
    assert!(record["text"].is_null() && record["data"].is_null());
    assert!(!out.join(format!("{source}.md")).exists(), "no transcript");
    assert_eq!(record_of(out, source)["error"], record["error"]);
    assert!(ran.stderr.contains(source), "the summary names {source}");
    record["error"].clone()
}

/// No temporary file (`.NAME.XXXX.tmp`) is left anywhere under `dir`.
fn assert_no_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "left behind: {:?}", entry.path());
        if entry.file_type().unwrap().is_dir() {
            assert_no_temporaries(&entry.path());
        }
    }
}

/// A folder `in` under `dir` with the good sample `good.png`.
fn input_with_a_good_document(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(sample("square.png"), input.join("good.png")).unwrap();
    input
}

#[test]
fn a_truncated_jpeg_is_image_corrupt_and_a_whole_one_is_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_a_good_document(tmp.path());
    let whole = std::fs::read(sample("receipt.jpg")).unwrap();
    std::fs::write(input.join("cut.jpg"), &whole[..whole.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(3), "a document failed");
    let error = assert_failed(&ran, &out, "cut.jpg", "image_corrupt");
    assert_eq!(
        error["message"],
        "JPEG is truncated (the file ends before the image data does)"
    );
    assert_done(&out, "good.png");

    // The whole file in its place: the rerun reads it.
    std::fs::write(input.join("cut.jpg"), &whole).unwrap();
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_done(&out, "cut.jpg");
}

/// A one-strip 8-bit grey TIFF whose header claims `width`×`height` pixels, of a few bytes.
fn tiff_bomb(width: u32, height: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),  // ImageWidth
        (257, 4, height), // ImageLength
        (258, 3, 8),      // BitsPerSample
        (259, 3, 1),      // Compression: none
        (262, 3, 1),      // PhotometricInterpretation: black is zero
        (273, 4, 8),      // StripOffsets
        (277, 3, 1),      // SamplesPerPixel
        (278, 4, height), // RowsPerStrip
        (279, 4, 16),     // StripByteCounts
    ];
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(24u32.to_le_bytes());
    tiff.extend([0u8; 16]);
    tiff.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        tiff.extend(tag.to_le_bytes());
        tiff.extend(kind.to_le_bytes());
        tiff.extend(1u32.to_le_bytes());
        tiff.extend(value.to_le_bytes());
    }
    tiff.extend(0u32.to_le_bytes());
    tiff
}

#[test]
fn decompression_bombs_are_refused_from_their_header() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_a_good_document(tmp.path());
    // 60000 × 60000 pixels claimed: 10.8 GB of RGB, in 74 and 138 bytes.
    std::fs::copy(sample("malformed/bomb.png"), input.join("bomb.png")).unwrap();
    std::fs::write(input.join("bomb.tiff"), tiff_bomb(60000, 60000)).unwrap();
    let out = tmp.path().join("out");
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(3));
    let message = "image is 60000x60000 = 3600000000 pixels, more than the limit of 100000000 \
                   pixels";
    for name in ["bomb.png", "bomb.tiff"] {
        let error = assert_failed(&ran, &out, name, "image_too_large");
        assert_eq!(error["message"], message, "{name}");
    }
    assert_eq!(record_of(&out, "bomb.tiff")["error"]["page"], 0);
    assert_done(&out, "good.png");
    // Refused before any pixel buffer: the whole run (model included) stays small.
    assert!(
        ran.max_rss_bytes < 1 << 30,
        "peak RSS {} bytes",
        ran.max_rss_bytes
    );
}

/// A TIFF of `pages` deflated grey frames of `side`×`side` pixels, each a little different.
fn long_tiff(path: &Path, pages: u32, side: u32) {
    use tiff::encoder::{colortype::Gray8, compression::DeflateLevel, Compression, TiffEncoder};
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut tiff = TiffEncoder::new(file)
        .unwrap()
        .with_compression(Compression::Deflate(DeflateLevel::Fast));
    for page in 0..pages {
        let pixels: Vec<u8> = (0..side * side)
            .map(|i| ((i % side + i / side + page) % 256) as u8)
            .collect();
        tiff.write_image::<Gray8>(side, side, &pixels).unwrap();
    }
}

#[test]
fn every_page_of_a_long_tiff_is_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_a_good_document(tmp.path());
    long_tiff(&input.join("long.tiff"), 40, 32);
    let out = tmp.path().join("out");
    let ran = run(quire_run(&input, &out, &["--max-new-tokens", "1"]), MINUTES);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let record = read_json(&out.join("long.tiff.json"));
    assert!(record["error"].is_null(), "{}", record["error"]);
    assert_eq!(record["page_count"], 40);
    assert_eq!(record["pages"].as_array().unwrap().len(), 40);
    let md = std::fs::read_to_string(out.join("long.tiff.md")).unwrap();
    assert!(md.contains("<!-- page 40 -->"), "{md}");
    assert_done(&out, "good.png");
}

#[test]
fn a_long_tiff_is_decoded_one_frame_at_a_time() {
    // `quire render` alone (no model): its memory is the decoder's and the pool's. Frames of
    // 1000×1000 are 3 MB each in RGB: holding 40 of them would cost 120 MB more than 4.
    let tmp = tempfile::tempdir().unwrap();
    let mut peak = Vec::new();
    for pages in [4, 40] {
        let tiff = tmp.path().join(format!("p{pages}.tiff"));
        long_tiff(&tiff, pages, 1000);
        let out = tmp.path().join(format!("out{pages}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
        cmd.arg("render").arg(&tiff).arg("--out").arg(&out).args([
            "--budget",
            "70",
            "--workers",
            "1",
        ]);
        let ran = run(cmd, MINUTES);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let lines = std::fs::read_to_string(out.join("pages.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), pages as usize);
        peak.push(ran.max_rss_bytes);
    }
    eprintln!("peak RSS of quire render: {peak:?} bytes for 4 and 40 pages");
    assert!(
        peak[1] < peak[0] + (64 << 20),
        "memory grows with the pages: {peak:?}"
    );
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn fifos_sockets_and_broken_symlinks_in_an_input_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_a_good_document(tmp.path());
    // Opened for reading, a FIFO waits for a writer: forever, here.
    mkfifo(&input.join("pipe.pdf"));
    let _socket = std::os::unix::net::UnixListener::bind(input.join("socket.png")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("missing.pdf"), input.join("dangling.pdf")).unwrap();
    std::os::unix::fs::symlink("self.pdf", input.join("self.pdf")).unwrap();
    std::fs::create_dir(input.join("sub")).unwrap();
    std::os::unix::fs::symlink(&input, input.join("sub/loop")).unwrap();
    // Named on the command line, the FIFO is an error record: it is never opened.
    let out = tmp.path().join("out-named");
    let mut cmd = quire_run(&input.join("pipe.pdf"), &out, &[]);
    cmd.arg(input.join("good.png"));
    let ran = run(cmd, MINUTES);
    assert_eq!(ran.code, Some(3));
    let error = assert_failed(&ran, &out, "pipe.pdf", "io");
    assert_eq!(error["message"], "not a regular file (a FIFO (named pipe))");
    assert_done(&out, "good.png");

    // In the folder: the broken symlinks are records, the FIFO and the socket warnings.
    let out = tmp.path().join("out");
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(3), "the broken symlinks failed");
    assert_done(&out, "good.png");
    let error = assert_failed(&ran, &out, "dangling.pdf", "not_found");
    assert_eq!(
        error["message"],
        format!(
            "dangling symlink: its target {} does not exist",
            tmp.path().join("missing.pdf").display()
        )
    );
    let error = assert_failed(&ran, &out, "self.pdf", "io");
    assert_eq!(
        error["message"],
        "symlink loop: the link leads back to itself and never reaches a file"
    );
    let error = assert_failed(&ran, &out, "sub/loop", "io");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("symlink loop"));
    // Not files: skipped with a warning naming each, no record.
    for (name, what) in [
        ("pipe.pdf", "a FIFO (named pipe)"),
        ("socket.png", "a socket"),
    ] {
        let warning = format!(
            "skipping {}: not a regular file ({what}); quire reads only regular files",
            input.join(name).display()
        );
        assert!(ran.stderr.contains(&warning), "{warning}");
        assert!(!out.join(format!("{name}.json")).exists());
    }
    assert_eq!(results(&out).len(), 4, "good.png and the three symlinks");
}

/// A tmpfs mounted for a test (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`64k`) at `dir`, read-only if asked; `None`, saying why, where
    /// this process may not mount.
    fn mount(dir: &Path, size: &str, read_only: bool) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let flags = if read_only { libc::MS_RDONLY } else { 0 };
        match mount(dir, flags, size) {
            Ok(()) => Some(Tmpfs(dir.to_path_buf())),
            Err(e) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs at {} ({e}): needs root",
                    dir.display()
                );
                None
            }
        }
    }

    /// Mounts it again writable.
    fn make_writable(&self, size: &str) {
        mount(&self.0, libc::MS_REMOUNT, size).unwrap();
    }

    /// Fills it up to `leave` free bytes with a file named `filler`.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let free = free_bytes(&self.0);
        std::fs::write(&filler, vec![0u8; (free - leave) as usize]).unwrap();
        assert_eq!(free_bytes(&self.0), leave);
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let c = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; detach, so that nothing still open keeps it mounted.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn mount(dir: &Path, flags: libc::c_ulong, size: &str) -> std::io::Result<()> {
    let target = CString::new(dir.to_str().unwrap()).unwrap();
    let data = CString::new(format!("size={size}")).unwrap();
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: a zeroed statvfs is valid for statvfs to fill; a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// What `quire status --json` says.
fn status(out: &Path) -> Value {
    let status = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["status", "--json", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(status.status.success());
    serde_json::from_slice(&status.stdout).unwrap()
}

#[test]
fn a_disk_that_fills_up_leaves_no_half_written_document() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(sample("square.png"), input.join("top.png")).unwrap();
    std::fs::copy(sample("strip.png"), input.join("sub/a.png")).unwrap();
    std::fs::copy(sample("receipt.jpg"), input.join("sub/b.jpg")).unwrap();
    // The outputs of sub/ go to a small disk with one 4 KiB page left: room for one output
    // file of a document but not both. The state store and results.jsonl are elsewhere.
    let out = tmp.path().join("out");
    let Some(disk) = Tmpfs::mount(&out.join("sub"), "64k", false) else {
        return;
    };
    let filler = disk.fill(4096);
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(3), "two documents failed");
    assert_done(&out, "top.png");
    for name in ["sub/a.png", "sub/b.jpg"] {
        let error = &record_of(&out, name)["error"];
        // Never a transcript, nor a JSON that claims one: at most the error record.
        assert!(!out.join(format!("{name}.md")).exists(), "{name}.md");
        let json = out.join(format!("{name}.json"));
        if json.exists() {
            assert_eq!(read_json(&json)["error"], *error, "{name}.json");
        }
        assert_eq!(error["kind"], "output_failed", "{name}");
        let message = error["message"].as_str().unwrap();
        let written = out.join(name);
        assert!(
            message.starts_with(&format!("cannot write {}.", written.display()))
                && message.ends_with(": No space left on device (os error 28)"),
            "{message}"
        );
        assert!(ran.stderr.contains(message), "the summary says it");
    }
    assert_no_temporaries(&out);
    let state = status(&out);
    assert_eq!(
        state["counts"]["done"], 1,
        "only top.png is marked done: {state}"
    );
    assert_eq!(state["counts"]["failed"], 2, "{state}");

    // Space freed: the rerun writes the two (top.png was done and is skipped).
    std::fs::remove_file(filler).unwrap();
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for name in ["top.png", "sub/a.png", "sub/b.jpg"] {
        assert_done(&out, name);
    }
    assert_eq!(status(&out)["counts"]["done"], 3);
    assert_no_temporaries(&out);
}

#[test]
fn a_read_only_or_full_output_folder_stops_the_run_before_any_document() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_a_good_document(tmp.path());
    let out = tmp.path().join("out");
    let Some(disk) = Tmpfs::mount(&out, "1m", true) else {
        return;
    };
    // Before the model loads, and naming the folder (for root, `chmod 0555` would not do).
    for target in [out.clone(), out.join("new")] {
        let ran = run(quire_run(&input, &target, &[]), MINUTES);
        assert_eq!(ran.code, Some(2), "{}", ran.stderr);
        assert!(
            ran.stderr.contains(&format!(
                "error: output folder {} is not writable (Read-only file system (os error 30))",
                target.display()
            )),
            "{}",
            ran.stderr
        );
    }
    disk.make_writable("1m");
    let filler = disk.fill(0);
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains(&format!(
        "error: output folder {} is not writable (No space left on device (os error 28))",
        out.display()
    )));
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["filler"], "nothing written");

    std::fs::remove_file(filler).unwrap();
    let ran = run(quire_run(&input, &out, &[]), MINUTES);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_done(&out, "good.png");
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, not a ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1) == Some(&pid.to_string()) {
            found.push(child);
        }
    }
    found
}

/// A quire process, killed with its workers if the test fails while it runs.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            for pid in children(self.0.id()) {
                // SAFETY: a process this test started (through quire).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_password_is_not_in_any_worker_command_line_or_environment() {
    let truth = read_json(&sample("ground_truth.json"));
    let password = truth["password"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        sample("malformed/encrypted.pdf"),
        input.join("locked-hang.pdf"),
    )
    .unwrap();

    // Given as QUIRE_PASSWORD: no warning, and the worker that opens the PDF (held on its
    // first page by the test hook) has it neither on its command line nor in its environment.
    let out = tmp.path().join("out-env");
    let mut cmd = quire_run(&input, &out, &["--page-timeout", "600"]);
    cmd.env("QUIRE_PASSWORD", password)
        .env("QUIRE_TEST_HANG_ON", "hang");
    let logs = tempfile::tempdir().unwrap();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(logs.path().join("stderr")).unwrap());
    let mut quire = KillOnDrop(cmd.spawn().unwrap());
    let deadline = Instant::now() + MINUTES;
    let pdf = input.join("locked-hang.pdf");
    // The worker once it has the job (and the password, over its stdin): it holds the PDF open.
    let has_the_pdf_open = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == pdf))
    };
    let worker = loop {
        if let Some(worker) = children(quire.0.id())
            .into_iter()
            .find(|&c| has_the_pdf_open(c))
        {
            break worker;
        }
        assert!(Instant::now() < deadline, "no PDF worker opened the PDF");
        assert!(quire.0.try_wait().unwrap().is_none(), "quire ended early");
        std::thread::sleep(Duration::from_millis(20));
    };
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("pdf-worker"));
    // Done looking: the hung worker is killed, which fails the document.
    // SAFETY: a process this test started (through quire).
    unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
    let status = quire.0.wait().unwrap();
    let contains = |hay: &[u8]| {
        hay.windows(password.len())
            .any(|w| w == password.as_bytes())
    };
    assert!(
        !contains(&cmdline),
        "the password is on the worker's command line"
    );
    assert!(
        !contains(&environ),
        "the password is in the worker's environment"
    );
    assert!(
        String::from_utf8_lossy(&environ).contains("QUIRE_TEST_HANG_ON=hang"),
        "the environment was read"
    );
    assert_eq!(status.code(), Some(3));
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    assert!(!stderr.contains("warning: --password"), "{stderr}");
    let error = &record_of(&out, "locked-hang.pdf")["error"];
    assert_eq!(error["kind"], "worker_crashed", "{error}");

    // Given as --password: it works, with a warning that it shows in the process list.
    std::fs::rename(input.join("locked-hang.pdf"), input.join("locked.pdf")).unwrap();
    let out = tmp.path().join("out-flag");
    let ran = run(quire_run(&input, &out, &["--password", password]), MINUTES);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_done(&out, "locked.pdf");
    let warning = "warning: --password on the command line is visible to other users of this \
                   machine (ps, /proc/PID/cmdline); use --password-file FILE or the \
                   QUIRE_PASSWORD variable";
    assert!(ran.stderr.contains(warning), "{}", ran.stderr);
}
