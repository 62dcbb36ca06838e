//! What quire promises an on-prem site, checked on the binary (the README's "On-prem
//! guarantees"):
//!
//! * no telemetry: `run`, `generate`, `watch` and `setup --check` (every command that loads
//!   ONNX Runtime) with a fresh `HOME` and XDG folders create exactly their outputs, and nothing
//!   else anywhere under those folders (ONNX Runtime's 1DS client wrote
//!   `Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}`);
//! * no network: `run`, `watch`, `render`, `generate`, `status` and `merge` succeed in a network
//!   namespace without interfaces and, traced with strace, open no socket but local (AF_UNIX)
//!   ones (the telemetry client also looked up its collector in DNS);
//! * logs without colour codes when stderr is not a terminal (`run` with debug logs, and every
//!   command of the network check).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> String {
    root()
        .join("samples/models/tiny-gemma4")
        .to_string_lossy()
        .into_owned()
}

fn sample(name: &str) -> PathBuf {
    root().join("samples").join(name)
}

/// The provisioned runtimes (`quire setup` put them there), so that no command downloads.
fn runtime_cache() -> PathBuf {
    quire_onnx::provision::Provisioner::from_env(false).cache_root
}

/// Small, fast settings for every model command.
const FAST: [&str; 6] = ["--budget", "70", "--max-new-tokens", "4", "--workers", "1"];

/// A fresh home: `HOME`, the XDG folders and `TMPDIR` all inside one temporary folder, together
/// with the inputs and outputs, so that every file a command creates shows up in [`files`].
struct Sandbox {
    dir: tempfile::TempDir,
}

/// The folders of the fresh home, relative to the sandbox.
const HOME_DIRS: [(&str, &str); 6] = [
    ("HOME", "home"),
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_DATA_HOME", "data"),
    ("XDG_STATE_HOME", "state"),
    ("TMPDIR", "tmp"),
];

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (_, sub) in HOME_DIRS {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn arg(&self, relative: &str) -> String {
        self.path(relative).to_string_lossy().into_owned()
    }

    /// Copies samples into the folder `relative`.
    fn inputs(&self, relative: &str, names: &[&str]) {
        std::fs::create_dir_all(self.path(relative)).unwrap();
        for name in names {
            std::fs::copy(sample(name), self.path(relative).join(name)).unwrap();
        }
    }

    /// `program` with the fresh home, the provisioned runtimes, and nothing that would switch
    /// telemetry off but quire itself.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for (var, sub) in HOME_DIRS {
            command.env(var, self.path(sub));
        }
        command
            .env("QUIRE_CACHE_DIR", runtime_cache())
            .env_remove("ORT_DISABLE_TELEMETRY")
            .env_remove("QUIRE_LOG");
        command
    }

    fn quire(&self, args: &[&str]) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_quire"));
        command.args(args);
        command
    }
}

fn output(mut command: Command) -> Output {
    let out = command.output().expect("start the command");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Every file and folder under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(base).unwrap().to_string_lossy();
            if path.is_dir() {
                out.push(format!("{relative}/"));
                walk(&path, base, out);
            } else {
                out.push(relative.into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Waits until `path` exists (the watch has done its first wave); `child` must not exit first.
fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the watch exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {} after 10 minutes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(pid: u32) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
}

#[test]
fn commands_that_load_onnx_runtime_create_only_their_outputs() {
    let sandbox = Sandbox::new();
    sandbox.inputs("in", &["invoice.pdf", "receipt.jpg", "square.png"]);
    sandbox.inputs("watched", &["strip.png"]);

    let (input, out, model) = (sandbox.arg("in"), sandbox.arg("out"), model());
    let mut args = vec![
        "run", &input, "--out", &out, "--model", &model, "--task", "ocr",
    ];
    args.extend(FAST);
    let run = output(sandbox.quire(&args));
    assert_eq!(run.status.code(), Some(0), "run");

    let image = sample("square.png");
    let mut args = vec!["generate", "--model", &model, "--prompt", "Hi", "--image"];
    args.push(image.to_str().unwrap());
    args.extend(&FAST[..4]);
    let generate = output(sandbox.quire(&args));
    assert_eq!(generate.status.code(), Some(0), "generate");

    let check = output(sandbox.quire(&["setup", "--check"]));
    assert_eq!(check.status.code(), Some(0), "setup --check");

    let watched = sandbox.arg("watched");
    let watch_out = sandbox.arg("watch-out");
    let mut args = vec!["watch", &watched, "--out", &watch_out, "--model", &model];
    args.extend(["--task", "ocr", "--settle", "0.2"]);
    args.extend(FAST);
    let mut watch = sandbox
        .quire(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sandbox.path("watch-out/strip.png.md"), &mut watch);
    sigterm(watch.id());
    assert_eq!(watch.wait().unwrap().code(), Some(0), "watch");

    let mut expected: Vec<String> = [
        "cache/",
        "config/",
        "data/",
        "home/",
        "state/",
        "tmp/",
        "in/",
        "in/invoice.pdf",
        "in/receipt.jpg",
        "in/square.png",
        "out/",
        "out/.quire/",
        "out/.quire/lock",
        "out/.quire/state.sqlite",
        "out/invoice.pdf.json",
        "out/invoice.pdf.md",
        "out/receipt.jpg.json",
        "out/receipt.jpg.md",
        "out/results.jsonl",
        "out/square.png.json",
        "out/square.png.md",
        "watched/",
        "watched/strip.png",
        "watch-out/",
        "watch-out/.quire/",
        "watch-out/.quire/lock",
        "watch-out/.quire/state.sqlite",
        "watch-out/strip.png.json",
        "watch-out/strip.png.md",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(files(sandbox.dir.path()), expected);
}

/// Why a network check cannot run here, if it cannot.
fn network_namespace_unavailable() -> Option<String> {
    match Command::new("unshare").args(["-n", "true"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`unshare -n` failed (it needs root or user namespaces): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no `unshare` command: {e}")),
    }
}

fn strace_available() -> bool {
    Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs quire in a network namespace without interfaces, under strace when there is one.
struct Offline<'a> {
    sandbox: &'a Sandbox,
    strace: bool,
}

impl Offline<'_> {
    fn trace(&self, name: &str) -> PathBuf {
        self.sandbox.path(&format!("trace-{name}"))
    }

    fn command(&self, name: &str, args: &[&str]) -> Command {
        let mut command = self.sandbox.command("unshare");
        command.args(["-n", "--"]);
        if self.strace {
            let trace = self.trace(name);
            command.args(["strace", "-f", "-e", "trace=network", "-o"]);
            command.args([trace.as_os_str(), "--".as_ref()]);
        }
        command.arg(env!("CARGO_BIN_EXE_quire")).args(args);
        command
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        let out = output(self.command(name, args));
        assert_eq!(out.status.code(), Some(0), "{name} without a network");
        // Piped, so plain: no colour codes, no progress bar.
        assert!(
            !out.stderr.contains(&0x1b),
            "{name}: escape codes on stderr"
        );
        self.check(name);
        out
    }

    /// No socket but AF_UNIX ones, no address but AF_UNIX ones. Local sockets are no network:
    /// glibc asks nscd over one when it looks up a user or host name from its files.
    fn check(&self, name: &str) {
        if !self.strace {
            return;
        }
        let trace = std::fs::read_to_string(self.trace(name)).unwrap();
        assert!(trace.contains("+++ exited with 0 +++"), "{name}: {trace}");
        let network: Vec<&str> = trace
            .lines()
            .filter(|line| {
                let opens = ["socket(", "socketpair("]
                    .iter()
                    .any(|call| line.contains(call) && !line.contains(&format!("{call}AF_UNIX")));
                let addresses = line
                    .match_indices("sa_family=")
                    .any(|(i, m)| !line[i + m.len()..].starts_with("AF_UNIX"));
                opens || addresses
            })
            .collect();
        assert!(
            network.is_empty(),
            "{name} used the network:\n{}",
            network.join("\n")
        );
    }

    /// The pid of the quire process: strace's child, or the one started when there is no strace
    /// (`unshare` without `--fork` execs it).
    fn quire_pid(&self, started: u32) -> u32 {
        if !self.strace {
            return started;
        }
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // `pid (comm) state ppid ...`; comm may hold spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(started)
            })
            .expect("strace's child")
    }
}

#[test]
fn commands_open_no_network_socket_once_runtimes_are_installed() {
    if let Some(reason) = network_namespace_unavailable() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let sandbox = Sandbox::new();
    let offline = Offline {
        sandbox: &sandbox,
        strace: strace_available(),
    };
    if !offline.strace {
        eprintln!("no strace: checking in a network namespace only, without a syscall trace");
    }
    let model = model();
    let invoice = sample("invoice.pdf");
    let invoice = invoice.to_str().unwrap();
    let out = sandbox.arg("out");

    let mut args = vec!["run", invoice, "--out", &out, "--model", &model];
    args.extend(["--task", "ocr"]);
    args.extend(FAST);
    offline.run("run", &args);

    let rendered = sandbox.arg("rendered");
    let args = ["render", invoice, "--out", &rendered, "--budget", "70"];
    offline.run("render", &args);

    let image = sample("square.png");
    let mut args = vec!["generate", "--model", &model, "--prompt", "Hi", "--image"];
    args.push(image.to_str().unwrap());
    args.extend(&FAST[..4]);
    offline.run("generate", &args);

    offline.run("status", &["status", "--out", &out, "--json"]);

    let merged = sandbox.arg("merged");
    offline.run("merge", &["merge", &out, "--out", &merged]);

    sandbox.inputs("watched", &["strip.png"]);
    let watched = sandbox.arg("watched");
    let watch_out = sandbox.arg("watch-out");
    let mut args = vec!["watch", &watched, "--out", &watch_out, "--model", &model];
    args.extend(["--task", "ocr", "--settle", "0.2"]);
    args.extend(FAST);
    let mut watch = offline
        .command("watch", &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sandbox.path("watch-out/strip.png.md"), &mut watch);
    sigterm(offline.quire_pid(watch.id()));
    assert_eq!(watch.wait().unwrap().code(), Some(0), "watch");
    offline.check("watch");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let sandbox = Sandbox::new();
    sandbox.inputs("in", &["invoice.pdf", "square.png"]);
    let input = sandbox.arg("in");
    let out = sandbox.arg("out");
    let model = model();
    // Progress lines and the summary are printed; -vv adds info and debug logs.
    let mut args = vec!["-vv", "run", &input, "--out", &out, "--model", &model];
    args.extend(["--task", "ocr"]);
    args.extend(FAST);
    let run = output(sandbox.quire(&args));
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(" INFO ") && stderr.contains(" DEBUG "),
        "{stderr}"
    );
    assert!(stderr.contains("[2/2 documents] done"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "escape codes in:\n{stderr:?}");
}
