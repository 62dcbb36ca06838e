//! Pipeline stages: threads joined by bounded channels. A slow stage fills its input queue and
//! blocks the one before it (back-pressure), so memory stays flat however many documents wait.
//! Each stage measures its busy time, items and queue depth so a run can say what bounded it.

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one stage did during a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageReport {
    pub name: String,
    /// Items taken from the input queue.
    pub items: u64,
    /// Time spent working on items (not waiting for input or for room downstream).
    pub busy: Duration,
    /// Of `busy`, time inside ONNX Runtime (model stages only).
    pub inference: Duration,
    /// Worker threads or processes the stage ran with.
    pub parallelism: usize,
    /// Deepest the input queue was when an item was taken.
    pub max_queue: usize,
    /// Mean input queue depth when items were taken.
    pub mean_queue: f64,
}

impl StageReport {
    pub fn new(name: &str, parallelism: usize) -> Self {
        StageReport {
            name: name.to_string(),
            parallelism: parallelism.max(1),
            ..Default::default()
        }
    }

    /// Records one item: how long it took and how deep the queue was when it was taken.
    pub fn record(&mut self, busy: Duration, queue_depth: usize) {
        self.items += 1;
        self.busy += busy;
        self.max_queue = self.max_queue.max(queue_depth);
        self.mean_queue += (queue_depth as f64 - self.mean_queue) / self.items as f64;
    }

    /// Share of the stage's capacity used over `wall`: 1.0 means always busy.
    pub fn utilisation(&self, wall: Duration) -> f64 {
        if wall.is_zero() {
            return 0.0;
        }
        self.busy.as_secs_f64() / (wall.as_secs_f64() * self.parallelism as f64)
    }
}

/// Whether a stage is working on items it has not yet sent on: set by that stage, read by the
/// next, which can tell "more is coming soon" from "the input is idle".
#[derive(Debug, Clone, Default)]
pub struct Working(Arc<AtomicBool>);

impl Working {
    pub fn set(&self, working: bool) {
        self.0.store(working, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Runs `work` on every item of `input` in a thread of its own, sending what it emits to
/// `output`. The thread ends when the input closes (every sender dropped) or the output is gone.
pub fn spawn<I, O, F>(
    name: &str,
    input: Receiver<I>,
    output: Sender<O>,
    mut work: F,
) -> JoinHandle<StageReport>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(I, &mut dyn FnMut(O)) + Send + 'static,
{
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("stage-{name}"))
        .spawn(move || {
            let mut report = StageReport::new(&name, 1);
            let mut closed = false;
            for item in input.iter() {
                let depth = input.len();
                let started = Instant::now();
                let mut waited = Duration::ZERO;
                work(item, &mut |out| {
                    // Time blocked on a full downstream queue is not work.
                    let blocked = Instant::now();
                    if output.send(out).is_err() {
                        closed = true;
                    }
                    waited += blocked.elapsed();
                });
                report.record(started.elapsed().saturating_sub(waited), depth);
                if closed {
                    break;
                }
            }
            report
        })
        .expect("spawn stage thread")
}

/// The stage that bounded a run: the one with the highest utilisation.
pub fn bottleneck(reports: &[StageReport], wall: Duration) -> Option<&StageReport> {
    reports.iter().max_by(|a, b| {
        a.utilisation(wall)
            .partial_cmp(&b.utilisation(wall))
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn a_slow_stage_is_the_bottleneck_and_back_pressure_bounds_queues() {
        let (tx, rx) = bounded::<u32>(2);
        let (mid_tx, mid_rx) = bounded::<u32>(2);
        let (out_tx, out_rx) = bounded::<u32>(100);
        let fast = spawn("fast", rx, mid_tx, |x, emit| emit(x * 2));
        let slow = spawn("slow", mid_rx, out_tx, |x, emit| {
            std::thread::sleep(Duration::from_millis(5));
            emit(x + 1)
        });
        let started = Instant::now();
        for i in 0..20 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let got: Vec<u32> = out_rx.iter().collect();
        let wall = started.elapsed();
        assert_eq!(got, (0..20).map(|i| i * 2 + 1).collect::<Vec<_>>());
        let reports = [fast.join().unwrap(), slow.join().unwrap()];
        assert_eq!(reports[0].items, 20);
        assert_eq!(reports[1].items, 20);
        assert!(reports[1].max_queue <= 2);
        assert_eq!(bottleneck(&reports, wall).unwrap().name, "slow");
    }
}
