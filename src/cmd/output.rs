//! Standard output of the commands that print results (`status`, `generate`, `setup`).
//!
//! A reader that stops early (`quire status --json | head -c 10`) closes the pipe; std's
//! `println!` then panics. Here a closed stdout ends the command quietly with exit 0
//! ([`StdoutClosed`], mapped in `main`), as for any Unix filter, while any other write error (a
//! full disk behind `> file`) is an error like any other. Resetting SIGPIPE to its default
//! instead would also kill `run` and `watch` when a PDF worker's pipe breaks, so it stays
//! ignored (Rust's default) and the error is handled here.

use std::fmt;
use std::io::Write;

/// Stdout was closed by its reader: the command stops, and that is not a failure.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` and a newline to stdout, flushed.
pub fn line(args: fmt::Arguments) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes `bytes` to stdout as they are (a generated script or page), flushed.
pub fn bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// `println!` for results: `outln!("{x}")?`, see [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
