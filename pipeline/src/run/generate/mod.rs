//! The generate stage: one continuous decoder batch across documents. Documents are taken in
//! while the batch has room (waiting for one only when idle), each prompt becomes a sequence,
//! sequences join the batch as the token budget allows and leave it as they finish, and a
//! document goes on as soon as all its prompts are done: memory is bounded by the budget, not
//! by the number of documents, and documents may leave in another order than they came.

mod confidence;
pub mod loop_guard;
mod outputs;
mod parts;
mod processor;
mod prompts;

pub use loop_guard::LoopGuardConfig;
pub use processor::{compile_constraint, CompileError};

use super::document::Document;
use super::fault::{self, Stage};
use super::settings::RunSettings;
use crate::stage::{StageReport, Working};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use outputs::{finish_doc, finish_sequence, Output};
use parts::Parts;
use processor::{SequenceProcessor, Thinking};
use prompts::{prompts, Prompt};
use quire_constrained::JsonConstraint;
use quire_exporters::record::ErrorKind;
use quire_onnx::gemma4::{
    Admission, BatchFailure, BatchLimits, DecodeBatch, FinishedSequence, Gemma4, GenerateOptions,
    NewSequence, Request,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A document whose prompts are being generated.
struct InFlight {
    doc: Document,
    prompts: Vec<Prompt>,
    outputs: Vec<Option<Output>>,
    /// When the stage took it in: its `generate` time runs from here to its last sequence.
    taken: Instant,
}

/// The stage's state besides the model: documents in flight, prompts not yet admitted, and
/// which document each sequence in the batch belongs to.
struct Scheduler<'c> {
    settings: Arc<RunSettings>,
    constraint: Option<&'c JsonConstraint>,
    docs: HashMap<usize, InFlight>,
    /// `(document key, prompt index)` in arrival order.
    waiting: VecDeque<(usize, usize)>,
    /// Sequence id → `(document key, prompt index)`.
    owners: HashMap<usize, (usize, usize)>,
    processor: SequenceProcessor<'c>,
    next_doc: usize,
    next_seq: usize,
    /// Parts of long documents whose other parts are not generated yet.
    parts: Parts,
    /// Documents ready to go downstream.
    done: Vec<Document>,
}

pub(super) fn spawn(
    input: Receiver<Document>,
    output: Sender<Document>,
    encoding: Working,
    mut model: Gemma4,
    constraint: Option<Arc<JsonConstraint>>,
    settings: Arc<RunSettings>,
) -> std::thread::JoinHandle<(StageReport, Option<Gemma4>)> {
    std::thread::Builder::new()
        .name("stage-generate".into())
        .spawn(move || {
            let inputs = Inputs { input, encoding };
            let report = run(&mut model, constraint.as_deref(), settings, inputs, output);
            (report, Some(model))
        })
        .expect("spawn generate stage")
}

/// The stage's input, and whether the vision stage is encoding documents that will come.
struct Inputs {
    input: Receiver<Document>,
    encoding: Working,
}

/// What to do next when the batch has room.
enum Next {
    Document(Box<Document>),
    /// Step the batch: nothing is coming soon.
    Step,
    Closed,
}

impl Inputs {
    /// How often a wait for the vision stage checks whether it is still encoding.
    const POLL: Duration = Duration::from_millis(20);

    /// The next document: waited for when the batch is idle, and while the vision stage is
    /// encoding documents that will come. A decode step costs nearly as much part-full as full
    /// (E2B q4, 2 cores: 183 ms for 1 row, 603 ms for 8), and while the batch waits the
    /// encoder has the cores to itself.
    fn coming(&self) -> bool {
        self.encoding.get()
    }

    fn next(&self, idle: bool) -> Next {
        loop {
            let received = if idle {
                self.input.recv().map_err(|_| TryRecvError::Disconnected)
            } else if self.coming() {
                match self.input.recv_timeout(Self::POLL) {
                    Ok(doc) => Ok(doc),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => Err(TryRecvError::Disconnected),
                }
            } else {
                self.input.try_recv()
            };
            return match received {
                Ok(doc) => Next::Document(Box::new(doc)),
                Err(TryRecvError::Empty) => Next::Step,
                Err(TryRecvError::Disconnected) => Next::Closed,
            };
        }
    }
}

/// The thought channel of `extract` sequences with `--thinking`: as long as the JSON may be.
fn thinking(model: &Gemma4, settings: &RunSettings) -> Option<Thinking> {
    let (open, close) = model.channel_ids?;
    (settings.thinking && matches!(settings.task, super::task::Task::Extract { .. })).then_some(
        Thinking {
            open,
            close,
            budget: settings.max_new_tokens,
        },
    )
}

fn run(
    model: &mut Gemma4,
    constraint: Option<&JsonConstraint>,
    settings: Arc<RunSettings>,
    inputs: Inputs,
    output: Sender<Document>,
) -> StageReport {
    let mut report = StageReport::new("generate", 1);
    let opts = GenerateOptions {
        max_new_tokens: settings.generated_tokens_limit(),
        sampling: settings.sampling,
        stop_ids: settings.ignore_eos.then(Vec::new),
        keep_prefill_logits: false,
    };
    let limits = BatchLimits {
        max_rows: settings.batch_size.max(1),
        max_tokens: settings.batch_tokens,
    };
    let mut batch = DecodeBatch::new(model, &opts, limits);
    let mut s = Scheduler {
        processor: SequenceProcessor::new(constraint, settings.loop_guard)
            .with_thinking(thinking(model, &settings)),
        settings,
        constraint,
        docs: HashMap::new(),
        waiting: VecDeque::new(),
        owners: HashMap::new(),
        next_doc: 0,
        next_seq: 0,
        parts: Parts::default(),
        done: Vec::new(),
    };
    let mut closed = false;
    loop {
        // Take documents in while their prompts could join: block only when idle.
        while !closed && s.waiting.is_empty() && batch.fits(&[1]) {
            let doc = match inputs.next(batch.is_empty()) {
                Next::Document(doc) => *doc,
                Next::Step => break,
                Next::Closed => {
                    closed = true;
                    break;
                }
            };
            let depth = inputs.input.len();
            let t = Instant::now();
            s.take_in(model, doc);
            report.record(t.elapsed(), depth);
            // Documents that need no generation go on at once, not after the next wait.
            if !send_all(&mut s.done, &output) {
                return report;
            }
        }
        let t = Instant::now();
        let mut inference = Duration::ZERO;
        if let Some(group) = s.next_group(&batch) {
            let requests = s.requests(&group);
            let seqs: Vec<NewSequence> = group
                .iter()
                .zip(&requests)
                .map(|(&(id, prompt), request)| NewSequence {
                    id,
                    stream: prompt,
                    request,
                })
                .collect();
            let started = Instant::now();
            let admitted = match fault::injected(Stage::Generate) {
                // As a failed prefill: the group is taken down, the running batch unchanged.
                Some(error) => Err(BatchFailure {
                    ids: seqs.iter().map(|seq| seq.id).collect(),
                    error,
                }),
                None => batch.admit(model, &seqs, &mut s.processor),
            };
            inference += started.elapsed();
            match admitted {
                Ok(Admission::Joined(done)) => s.route(model, done),
                // The running batch must drain first: the group waits at the front.
                Ok(Admission::Refused) => s.requeue(&group),
                Err(failure) => s.fail(failure),
            }
        }
        // While more documents are being encoded and could join, the batch waits for them.
        let gathering = !closed && s.waiting.is_empty() && batch.fits(&[1]) && inputs.coming();
        if !batch.is_empty() && !gathering {
            let started = Instant::now();
            let stepped = batch.step(model, &mut s.processor);
            inference += started.elapsed();
            match stepped {
                Ok(done) => s.route(model, done),
                Err(failure) => s.fail(failure),
            }
        }
        report.busy += t.elapsed();
        report.inference += inference;
        if !send_all(&mut s.done, &output) {
            return report;
        }
        if closed && s.docs.is_empty() {
            return report;
        }
    }
}

impl Scheduler<'_> {
    /// Builds a document's prompts and queues them; a document that cannot be generated
    /// goes straight on.
    fn take_in(&mut self, model: &Gemma4, mut doc: Document) {
        let taken = Instant::now();
        if doc.error.is_some() {
            return self.finished(doc);
        }
        let prompts = match prompts(model, &self.settings, &mut doc) {
            Ok(p) => p,
            Err(e) => {
                doc.fail(ErrorKind::PromptTooLong, e.to_string(), None);
                return self.finished(doc);
            }
        };
        let key = self.next_doc;
        self.next_doc += 1;
        self.waiting.extend((0..prompts.len()).map(|p| (key, p)));
        let outputs = (0..prompts.len()).map(|_| None).collect();
        self.docs.insert(
            key,
            InFlight {
                doc,
                prompts,
                outputs,
                taken,
            },
        );
        // A document without prompts (none today) is done at once.
        self.finish_if_done(model, key);
    }

    /// The waiting prompts, first come first served, that may join the batch together now:
    /// `(sequence id, prompt index)`, their owners recorded and processor states started.
    fn next_group(&mut self, batch: &DecodeBatch) -> Option<Vec<(usize, usize)>> {
        let mut lens = Vec::new();
        let mut group = Vec::new();
        while let Some(&(key, p)) = self.waiting.front() {
            lens.push(self.docs[&key].prompts[p].input_ids.len());
            if !batch.fits(&lens) || too_much_padding(&lens) {
                break;
            }
            self.waiting.pop_front();
            let id = self.next_seq;
            self.next_seq += 1;
            self.owners.insert(id, (key, p));
            self.processor.start(id);
            group.push((id, p));
        }
        (!group.is_empty()).then_some(group)
    }

    /// Requests of a group, with the image features of their pages.
    fn requests(&mut self, group: &[(usize, usize)]) -> Vec<Request<'static>> {
        group
            .iter()
            .map(|&(id, p)| {
                let (key, _) = self.owners[&id];
                let flight = self.docs.get_mut(&key).expect("in flight");
                let prompt = &flight.prompts[p];
                flight.doc.tokens.prompt += prompt.input_ids.len() as u64;
                let features: Vec<f32> = prompt
                    .pages
                    .iter()
                    .flat_map(|&i| flight.doc.pages[i].features.iter().flatten().copied())
                    .collect();
                Request {
                    input_ids: prompt.input_ids.clone(),
                    images: Vec::new(),
                    image_features: Some(features),
                }
            })
            .collect()
    }

    /// Puts a refused group back at the front of the queue, in order.
    fn requeue(&mut self, group: &[(usize, usize)]) {
        for &(id, _) in group.iter().rev() {
            self.processor.finish(id);
            if let Some((key, p)) = self.owners.remove(&id) {
                let flight = self.docs.get_mut(&key).expect("in flight");
                flight.doc.tokens.prompt -= flight.prompts[p].input_ids.len() as u64;
                self.waiting.push_front((key, p));
            }
        }
    }

    /// Hands finished sequences to their documents.
    fn route(&mut self, model: &Gemma4, finished: Vec<FinishedSequence>) {
        for FinishedSequence { id, generation } in finished {
            let state = self.processor.finish(id);
            // A sequence of a document that failed meanwhile has no owner left.
            let Some((key, p)) = self.owners.remove(&id) else {
                continue;
            };
            let Some(flight) = self.docs.get_mut(&key) else {
                continue;
            };
            let state = state.expect("a started sequence has a state");
            let out = finish_sequence(
                &self.settings,
                &mut flight.doc,
                &flight.prompts[p],
                generation,
                state,
            );
            flight.outputs[p] = Some(out);
            self.finish_if_done(model, key);
        }
    }

    /// Fails the documents of the sequences a model call took down; their other sequences are
    /// dropped from the queue and ignored when they finish.
    fn fail(&mut self, failure: BatchFailure) {
        let message = failure.error.to_string();
        for id in failure.ids {
            self.processor.finish(id);
            let Some((key, _)) = self.owners.remove(&id) else {
                continue;
            };
            if let Some(mut flight) = self.docs.remove(&key) {
                flight
                    .doc
                    .fail(ErrorKind::GenerationFailed, message.clone(), None);
                self.waiting.retain(|&(k, _)| k != key);
                record_time(&mut flight);
                self.finished(flight.doc);
            }
        }
    }

    fn finish_if_done(&mut self, model: &Gemma4, key: usize) {
        if !self.docs[&key].outputs.iter().all(Option::is_some) {
            return;
        }
        let mut flight = self.docs.remove(&key).expect("in flight");
        let outputs = flight.outputs.drain(..).flatten().collect();
        finish_doc(
            model,
            self.constraint,
            &self.settings,
            &mut flight.doc,
            &flight.prompts,
            outputs,
        );
        record_time(&mut flight);
        self.finished(flight.doc);
    }

    /// A generated document (or part) goes downstream without what only the model needed; a
    /// part waits for the rest of its document.
    fn finished(&mut self, mut doc: Document) {
        doc.drop_model_inputs();
        if doc.part.is_none() {
            return self.done.push(doc);
        }
        if let Some(whole) = self.parts.add(doc, self.constraint) {
            self.done.push(whole);
        }
    }
}

/// A group is prefilled as one left-padded batch, and padding costs as much compute as real
/// tokens: a prompt much longer or shorter than the group's waits for the next group (which
/// joins after one decode step) rather than making every row pay the longest length.
fn too_much_padding(lens: &[usize]) -> bool {
    const MAX_PADDING: f64 = 0.25;
    let real: usize = lens.iter().sum();
    let padded = lens.len() * lens.iter().copied().max().unwrap_or(0);
    lens.len() > 1 && padded as f64 > (1.0 + MAX_PADDING) * real as f64
}

/// Sends the finished documents on; false when the next stage is gone.
fn send_all(done: &mut Vec<Document>, output: &Sender<Document>) -> bool {
    done.drain(..).all(|doc| output.send(doc).is_ok())
}

fn record_time(flight: &mut InFlight) {
    flight.doc.timings_ms.insert(
        "generate".into(),
        flight.taken.elapsed().as_secs_f64() * 1e3,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    fn document() -> Document {
        Document::rendered(0, "0".repeat(64), Ok(Vec::new()), 0.0)
    }

    fn inputs() -> (Sender<Document>, Inputs) {
        let (tx, input) = bounded(2);
        let encoding = Working::default();
        (tx, Inputs { input, encoding })
    }

    /// Runs `f` on another thread after `ms` milliseconds.
    fn later(ms: u64, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            f()
        })
    }

    #[test]
    fn a_running_batch_steps_when_nothing_is_being_encoded() {
        let (_tx, inputs) = inputs();
        assert!(matches!(inputs.next(false), Next::Step));
    }

    #[test]
    fn a_running_batch_waits_for_documents_the_vision_stage_is_encoding() {
        let (tx, inputs) = inputs();
        inputs.encoding.set(true);
        let t = Instant::now();
        let sender = later(150, move || tx.send(document()).unwrap());
        assert!(matches!(inputs.next(false), Next::Document(_)));
        assert!(t.elapsed() >= Duration::from_millis(150));
        sender.join().unwrap();
    }

    #[test]
    fn a_running_batch_stops_waiting_when_the_vision_stage_goes_idle() {
        let (_tx, inputs) = inputs();
        inputs.encoding.set(true);
        let encoding = inputs.encoding.clone();
        let t = Instant::now();
        let idler = later(150, move || encoding.set(false));
        assert!(matches!(inputs.next(false), Next::Step));
        assert!(t.elapsed() >= Duration::from_millis(150));
        idler.join().unwrap();
    }

    #[test]
    fn an_idle_batch_waits_and_a_closed_input_ends_the_stage() {
        let (tx, inputs) = inputs();
        let sender = later(50, move || tx.send(document()).unwrap());
        assert!(matches!(inputs.next(true), Next::Document(_)));
        sender.join().unwrap();
        // The sender is gone: closed, whether the batch is idle or running and encoding or not.
        assert!(matches!(inputs.next(true), Next::Closed));
        inputs.encoding.set(true);
        assert!(matches!(inputs.next(false), Next::Closed));
    }
}
