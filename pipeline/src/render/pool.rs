//! The parent side: a pool of slots, each owning at most one PDFium worker process (started on
//! its first PDF, restarted after a crash or a timeout). Slots take documents from a channel and
//! send [`Event`]s: pages, error records and one `Finished` per document. Images are decoded in
//! the slot's own thread (no PDFium involved).

use super::protocol::{read_frame, FrameError, Job, Reply};
use crate::error::{DocError, ErrorKind};
use crate::images::{decode_pages, into_budget_size, ImageLimits};
use crate::page::Page;
use crate::sniff::Format;
use crate::sources::Source;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use quire_onnx::gemma4::image_processor::{Budget, ResizeRule};
use std::ffi::OsString;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Slots, i.e. documents in flight and PDFium processes at most (at least 1).
    pub workers: usize,
    pub budget: Budget,
    pub rule: ResizeRule,
    pub password: Option<String>,
    /// Longest a worker may take for one page (or to open a document) before it is killed.
    pub page_timeout: Duration,
    /// Longest a new worker may take to load PDFium.
    pub start_timeout: Duration,
    /// Worker crashes or timeouts on one document after which its remaining pages are skipped.
    pub max_failures_per_document: u32,
    pub image_limits: ImageLimits,
    /// `None` when PDFium is not available: PDFs then fail with `worker_failed`.
    pub worker: Option<WorkerCommand>,
}

impl PoolOptions {
    pub fn new(budget: Budget, worker: Option<WorkerCommand>) -> Self {
        PoolOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            budget,
            rule: ResizeRule::default(),
            password: None,
            page_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            max_failures_per_document: 2,
            image_limits: ImageLimits::default(),
            worker,
        }
    }
}

/// What the pool reports.
#[derive(Debug)]
pub enum Event {
    Page(Page),
    /// A document, or one page of it, failed.
    Error(DocError),
    /// A document is done (after its pages and errors).
    Finished(Finished),
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub source: PathBuf,
    pub relative: PathBuf,
    /// Pages delivered.
    pub pages: u32,
    /// Error records for this document.
    pub errors: u32,
}

/// Running slot threads; dropping the events receiver makes them stop at their next event.
pub struct Pool {
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `opts.workers` slots reading `sources` and writing `events`. The pool ends when
    /// `sources` is closed and drained (or `events` is dropped).
    pub fn spawn(opts: PoolOptions, sources: Receiver<Source>, events: Sender<Event>) -> Pool {
        let opts = Arc::new(opts);
        let threads = (0..opts.workers.max(1))
            .map(|i| {
                let (opts, sources, events) = (opts.clone(), sources.clone(), events.clone());
                std::thread::Builder::new()
                    .name(format!("quire-render-{i}"))
                    .spawn(move || Slot::new(opts, events).run(sources))
                    .expect("spawning a render thread")
            })
            .collect();
        Pool { threads }
    }

    /// Waits for every slot to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The events receiver was dropped: stop.
struct Stopped;

struct Slot {
    opts: Arc<PoolOptions>,
    events: Sender<Event>,
    worker: Option<Worker>,
}

impl Slot {
    fn new(opts: Arc<PoolOptions>, events: Sender<Event>) -> Self {
        Slot {
            opts,
            events,
            worker: None,
        }
    }

    fn run(mut self, sources: Receiver<Source>) {
        for source in sources {
            let mut tally = Finished {
                source: source.path.clone(),
                relative: source.relative.clone(),
                pages: 0,
                errors: 0,
            };
            let result = if source.format == Format::Pdf {
                self.pdf(&source, &mut tally)
            } else {
                self.image(&source, &mut tally)
            };
            if result.is_err() || self.send(Event::Finished(tally)).is_err() {
                break;
            }
        }
        if let Some(worker) = self.worker.take() {
            worker.shutdown();
        }
    }

    fn send(&self, event: Event) -> Result<(), Stopped> {
        self.events.send(event).map_err(|_| Stopped)
    }

    fn error(&self, tally: &mut Finished, error: DocError) -> Result<(), Stopped> {
        tally.errors += 1;
        self.send(Event::Error(error))
    }

    fn image(&mut self, source: &Source, tally: &mut Finished) -> Result<(), Stopped> {
        let opts = self.opts.clone();
        let mut stopped = false;
        let mut started = Instant::now();
        let single = source.format != Format::Tiff;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_pages(
                &source.path,
                source.format,
                &opts.image_limits,
                |index, img| {
                    if stopped {
                        return;
                    }
                    let original_px = Some(img.dimensions());
                    let event = match into_budget_size(img, opts.budget, &opts.rule) {
                        Ok(image) => {
                            tally.pages += 1;
                            Event::Page(Page {
                                source: source.path.clone(),
                                relative: source.relative.clone(),
                                page_index: index,
                                page_count: single.then_some(1),
                                image,
                                original_px,
                                points: None,
                                text_layer: None,
                                render_ms: started.elapsed().as_secs_f64() * 1e3,
                            })
                        }
                        Err(e) => {
                            tally.errors += 1;
                            Event::Error(
                                DocError::new(&source.path, ErrorKind::BadPageSize, e.to_string())
                                    .on_page(Some(index)),
                            )
                        }
                    };
                    stopped = self.events.send(event).is_err();
                    started = Instant::now();
                },
            )
        }));
        if stopped {
            return Err(Stopped);
        }
        match decoded {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => self.error(tally, e),
            Err(_) => self.error(
                tally,
                DocError::new(
                    &source.path,
                    ErrorKind::ImageCorrupt,
                    "the image decoder failed (internal panic) on this file",
                ),
            ),
        }
    }

    fn pdf(&mut self, source: &Source, tally: &mut Finished) -> Result<(), Stopped> {
        let path = &source.path;
        let mut start = 0u32;
        let mut failures = 0u32;
        let mut page_count: Option<u32> = None;
        loop {
            // A worker, started if needed.
            let worker = match self.worker.take() {
                Some(w) => w,
                None => match self.start_worker() {
                    Ok(w) => w,
                    Err(message) => {
                        return self
                            .error(tally, DocError::new(path, ErrorKind::WorkerFailed, message));
                    }
                },
            };
            let mut worker = worker;
            let job = Job {
                path: path.clone(),
                password: self.opts.password.clone(),
                budget: self.opts.budget,
                start_page: start,
            };
            let failure = match worker.send(&job) {
                Err(e) => Some((ErrorKind::WorkerCrashed, worker.died(&format!("{e}")))),
                Ok(()) => loop {
                    match worker.recv(self.opts.page_timeout) {
                        Received::Frame(Reply::Opened { page_count: n }, _) => page_count = Some(n),
                        Received::Frame(
                            Reply::Page {
                                index,
                                width,
                                height,
                                points,
                                text,
                                render_ms,
                            },
                            payload,
                        ) => {
                            start = index + 1;
                            let Some(image) = image::RgbImage::from_raw(width, height, payload)
                            else {
                                break Some((
                                    ErrorKind::WorkerCrashed,
                                    worker.died("sent a page of the wrong size"),
                                ));
                            };
                            tally.pages += 1;
                            self.send(Event::Page(Page {
                                source: path.clone(),
                                relative: source.relative.clone(),
                                page_index: index,
                                page_count,
                                image,
                                original_px: None,
                                points: Some(points),
                                text_layer: Some(text),
                                render_ms,
                            }))?;
                        }
                        Received::Frame(
                            Reply::PageError {
                                index,
                                kind,
                                message,
                            },
                            _,
                        ) => {
                            start = index + 1;
                            self.error(
                                tally,
                                DocError::new(path, kind, message).on_page(Some(index)),
                            )?;
                        }
                        Received::Frame(Reply::DocError { kind, message }, _) => {
                            self.error(tally, DocError::new(path, kind, message))?;
                        }
                        Received::Frame(Reply::Done, _) => {
                            self.worker = Some(worker);
                            return Ok(());
                        }
                        Received::Frame(other, _) => {
                            let what = format!("sent an unexpected {other:?}");
                            break Some((ErrorKind::WorkerCrashed, worker.died(&what)));
                        }
                        Received::Timeout => {
                            worker.kill();
                            let secs = self.opts.page_timeout.as_secs_f64();
                            let message = match page_count {
                                Some(_) => format!("PDFium took longer than {secs} s on this page; its worker was killed"),
                                None => format!("PDFium took longer than {secs} s to open the document; its worker was killed"),
                            };
                            break Some((ErrorKind::WorkerTimeout, message));
                        }
                        Received::Died(why) => {
                            break Some((ErrorKind::WorkerCrashed, worker.died(&why)));
                        }
                    }
                },
            };
            let Some((kind, message)) = failure else {
                unreachable!("the loop only ends with a failure or returns")
            };
            failures += 1;
            let Some(count) = page_count else {
                // Died while opening: the document failed.
                return self.error(tally, DocError::new(path, kind, message));
            };
            if start >= count {
                // Died after the last page: nothing was lost.
                return Ok(());
            }
            self.error(
                tally,
                DocError::new(path, kind, message).on_page(Some(start)),
            )?;
            start += 1;
            if start >= count {
                return Ok(());
            }
            if failures >= self.opts.max_failures_per_document {
                return self.error(
                    tally,
                    DocError::new(
                        path,
                        kind,
                        format!(
                            "pages {}-{count} skipped after {failures} worker failures on this document",
                            start + 1
                        ),
                    ),
                );
            }
        }
    }

    fn start_worker(&self) -> Result<Worker, String> {
        let command = self
            .opts
            .worker
            .as_ref()
            .ok_or_else(|| "PDFium is not available (run `quire setup`)".to_string())?;
        Worker::start(command, self.opts.start_timeout)
    }
}

enum Received {
    Frame(Reply, Vec<u8>),
    Timeout,
    Died(String),
}

/// One worker process and the thread reading its frames.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Result<(Reply, Vec<u8>), FrameError>>,
    reader: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(command: &WorkerCommand, timeout: Duration) -> Result<Worker, String> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the PDF worker {}: {e}",
                    command.program.display()
                )
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
            .map_err(|e| format!("cannot start a reader thread: {e}"))?;
        let mut worker = Worker {
            child,
            stdin,
            frames,
            reader: Some(reader),
        };
        match worker.recv(timeout) {
            Received::Frame(Reply::Ready, _) => Ok(worker),
            Received::Frame(Reply::Fatal { message }, _) => {
                worker.kill();
                Err(message)
            }
            Received::Frame(other, _) => Err(worker.died(&format!("sent {other:?} first"))),
            Received::Timeout => {
                worker.kill();
                Err(format!(
                    "the PDF worker did not start within {} s",
                    timeout.as_secs_f64()
                ))
            }
            Received::Died(why) => Err(worker.died(&why)),
        }
    }

    fn send(&mut self, job: &Job) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("worker stdin closed"))?;
        let mut line = serde_json::to_vec(job).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()
    }

    fn recv(&self, timeout: Duration) -> Received {
        match self.frames.recv_timeout(timeout) {
            Ok(Ok((reply, payload))) => Received::Frame(reply, payload),
            Ok(Err(FrameError::Eof)) => Received::Died("its output ended".into()),
            Ok(Err(e)) => Received::Died(e.to_string()),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Died("its output ended".into()),
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Makes sure the process is gone and describes how it ended.
    fn died(&mut self, why: &str) -> String {
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
    fn shutdown(mut self) {
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
