//! Progress on stderr: bars (documents, pages, tokens/s) on a terminal, plain log lines
//! otherwise (CI logs, systemd journals).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quire_pipeline::run::DocumentDone;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    unit: &'static str,
}

impl Progress {
    pub fn new(total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {prefix} {msg} (eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(unit);
            bar
        });
        Progress { bar, total, unit }
    }

    /// A callback for the pipeline's events.
    pub fn observer(&self) -> impl Fn(DocumentDone) + Send + 'static {
        let bar = self.bar.clone();
        let total = self.total;
        let unit = self.unit;
        let done = Arc::new(AtomicU64::new(0));
        let pages = Arc::new(AtomicU64::new(0));
        let tokens = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        move |event| {
            let DocumentDone {
                source,
                pages: n,
                generated_tokens,
                error,
                ..
            } = event;
            {
                let failed = error.is_some();
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                let p = pages.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                let t = tokens.fetch_add(generated_tokens, Ordering::Relaxed) + generated_tokens;
                let rate = t as f64 / started.elapsed().as_secs_f64().max(1e-9);
                match &bar {
                    Some(bar) => {
                        bar.set_position(d);
                        bar.set_message(format!("{p} pages, {rate:.1} tokens/s"));
                        if failed {
                            bar.println(format!("failed: {source}"));
                        }
                    }
                    None => eprintln!(
                        "[{d}/{total} {unit}] {} {source} ({n} pages; {p} pages, {rate:.1} tokens/s so far)",
                        if failed { "FAILED" } else { "done" }
                    ),
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
