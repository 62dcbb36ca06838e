//! The worker processes of rendering, parent side: start one (the same binary, `quire
//! pdf-worker`), send it jobs, read its frames on a thread of its own with a timeout, and kill
//! and reap it when it crashes, hangs or is no longer needed. The child side is
//! [`super::worker`]; what they say to each other is [`super::protocol`].

use super::protocol::{read_frame, FrameError, RenderJob, Reply};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::ffi::OsString;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable of `--password`, which workers do not inherit.
pub const PASSWORD_VARIABLE: &str = "QUIRE_PASSWORD";

/// How to start a worker: normally the running `quire` binary with `pdf-worker --pdfium LIB`.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// `program pdf-worker --pdfium <library>`.
    pub fn quire(program: PathBuf, pdfium_library: &std::path::Path) -> Self {
        WorkerCommand {
            program,
            args: vec![
                "pdf-worker".into(),
                "--pdfium".into(),
                pdfium_library.as_os_str().to_owned(),
            ],
        }
    }
}

/// Why no worker could be started (`worker_failed`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("PDFium is not available (run `quire setup`)")]
    NoPdfium,
    #[error("cannot start the PDF worker {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start a reader thread: {0}")]
    ReaderThread(std::io::Error),
    /// The worker said it cannot work (PDFium failed to load).
    #[error("{0}")]
    Fatal(String),
    #[error("the PDF worker did not start within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// It died or misbehaved before saying it is ready.
    #[error("{0}")]
    Died(String),
}

pub(super) enum Received {
    Frame(Reply, Vec<u8>),
    Timeout,
    Died(String),
}

/// One worker process and the thread reading its frames.
pub(super) struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Result<(Reply, Vec<u8>), FrameError>>,
    reader: Option<JoinHandle<()>>,
}

impl WorkerProcess {
    pub(super) fn start(
        command: &WorkerCommand,
        timeout: Duration,
    ) -> Result<WorkerProcess, StartError> {
        let mut child = Command::new(&command.program);
        // Its own process group: a Ctrl-C meant for quire (which then finishes its work in
        // flight) does not kill the workers under it. It exits when its stdin closes, and is
        // killed when quire dies (a worker stuck in a page would not see its stdin close).
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id();
            // SAFETY: `die_with_parent` makes only async-signal-safe calls.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut child, move || {
                    die_with_parent(parent)
                });
            }
        }
        let mut child = child
            .args(&command.args)
            // The password of encrypted PDFs goes to the worker with each job, over stdin;
            // it must not be in its environment (`/proc/PID/environ`) either.
            .env_remove(PASSWORD_VARIABLE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| StartError::Spawn {
                program: command.program.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let (tx, frames) = crossbeam_channel::bounded(1);
        let reader = std::thread::Builder::new()
            .name("quire-worker-reader".into())
            .spawn(move || {
                let mut stdout = BufReader::with_capacity(1 << 20, stdout);
                loop {
                    let frame = read_frame(&mut stdout);
                    let end = frame.is_err();
                    if tx.send(frame).is_err() || end {
                        break;
                    }
                }
            })
            .map_err(StartError::ReaderThread)?;
        let mut worker = WorkerProcess {
            child,
            stdin,
            frames,
            reader: Some(reader),
        };
        match worker.recv(timeout) {
            Received::Frame(Reply::Ready, _) => Ok(worker),
            Received::Frame(Reply::Fatal { message }, _) => {
                worker.kill();
                Err(StartError::Fatal(message))
            }
            Received::Frame(other, _) => Err(StartError::Died(
                worker.died(&format!("sent {other:?} first")),
            )),
            Received::Timeout => {
                worker.kill();
                Err(StartError::Timeout(timeout))
            }
            Received::Died(why) => Err(StartError::Died(worker.died(&why))),
        }
    }

    pub(super) fn send(&mut self, job: &RenderJob) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("worker stdin closed"))?;
        let mut line = serde_json::to_vec(job).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()
    }

    pub(super) fn recv(&self, timeout: Duration) -> Received {
        match self.frames.recv_timeout(timeout) {
            Ok(Ok((reply, payload))) => Received::Frame(reply, payload),
            Ok(Err(FrameError::Eof)) => Received::Died("its output ended".into()),
            Ok(Err(e)) => Received::Died(e.to_string()),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Died("its output ended".into()),
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Makes sure the process is gone and describes how it ended.
    pub(super) fn died(&mut self, why: &str) -> String {
        // It usually is dead already (EOF); give it a moment to be reaped, then kill.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        self.kill();
        let how = status.map_or_else(|| "killed".to_string(), describe_exit);
        format!("the PDFium worker died on this document ({how}; {why})")
    }

    /// Closes stdin so the worker exits on its own; kills it if it does not within a second.
    pub(super) fn shutdown(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

impl Drop for WorkerProcess {
    /// A worker dropped in the middle of a job (the consumer went away) is killed and reaped.
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.kill();
        }
    }
}

/// Runs in the new worker between fork and exec: it gets SIGKILL when its parent dies. Linux
/// sends that when the parent *thread* ends, which is the pool slot that owns the worker and
/// stops it first anyway. A parent that died before the `prctl` would never send it: then the
/// worker is an orphan already (its parent pid changed), and goes at once.
#[cfg(target_os = "linux")]
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls, async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL, out of memory?)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                _ => "",
            };
            return format!("killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "ended".to_string(),
    }
}
