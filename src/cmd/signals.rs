//! SIGINT and SIGTERM for `quire run` and `quire watch`. The first asks for a graceful stop: a
//! flag the job checks before it starts each document, and a line on stderr saying so. A second
//! one exits at once with the signal's code, 128 + its number (130 for SIGINT, 143 for
//! SIGTERM): the PDF workers die with the process, and what was in flight stays marked running
//! by a dead process, which the next run redoes.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Stop {
    flag: Arc<AtomicBool>,
    /// The number of the signal received; 0 before any.
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// Installs the handlers. At the first signal, `SIGNAL: <doing>` goes to stderr.
    pub fn on_signals(doing: &'static str) -> anyhow::Result<Stop> {
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())?;
            signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)?;
            signal_hook::flag::register(sig, flag.clone())?;
        }
        // Printing is not allowed in a signal handler: a thread says it.
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        std::thread::Builder::new()
            .name("quire-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("{}: {doing}", name(sig));
                }
            })?;
        Ok(Stop { flag, signal })
    }

    /// The flag the job watches.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The signal that asked to stop, if one did: its name and the exit code it gives.
    pub fn received(&self) -> Option<(&'static str, u8)> {
        match self.signal.load(Ordering::SeqCst) as i32 {
            0 => None,
            sig => Some((name(sig), (128 + sig) as u8)),
        }
    }
}

fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
