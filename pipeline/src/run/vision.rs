//! The vision stage: pages are encoded in runs of at most `vision_patches` patches, across
//! documents. Documents already waiting are taken into the same runs while their patches fit;
//! a large document is split into several runs; a page larger than the budget runs alone.
//! Each image's features do not depend on what else is in its run.

use super::document::Document;
use crate::stage::{StageReport, Working};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use quire_exporters::record::ErrorKind;
use quire_onnx::gemma4::vision_encoder::VisionEncoder;
use quire_onnx::gemma4::ProcessedImage;
use std::time::{Duration, Instant};

/// Patches a document's pages take in the encoder (each image is padded to its budget's
/// patch count).
fn patches(doc: &Document) -> usize {
    if doc.error.is_some() {
        return 0;
    }
    doc.pages
        .iter()
        .filter_map(|p| p.image.as_ref())
        .map(|i| i.max_patches)
        .sum()
}

pub(super) fn spawn(
    input: Receiver<Document>,
    output: Sender<Document>,
    mut encoder: Option<VisionEncoder>,
    vision_patches: usize,
    working: Working,
) -> std::thread::JoinHandle<(StageReport, Option<VisionEncoder>)> {
    let budget = vision_patches.max(1);
    std::thread::Builder::new()
        .name("stage-vision".into())
        .spawn(move || {
            let mut report = StageReport::new("vision", 1);
            // A document taken from the queue that did not fit the last group.
            let mut held: Option<Document> = None;
            'run: loop {
                let Some(first) = held.take().or_else(|| input.recv().ok()) else {
                    break;
                };
                // From taking a group to sending its last document: the generate stage waits
                // for it rather than step a part-full batch.
                working.set(true);
                let mut depths = vec![input.len()];
                let mut total = patches(&first);
                let mut group = vec![first];
                while total < budget {
                    match input.try_recv() {
                        Ok(doc) => {
                            let p = patches(&doc);
                            if total + p > budget {
                                held = Some(doc);
                                break;
                            }
                            depths.push(input.len());
                            total += p;
                            group.push(doc);
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                let t = Instant::now();
                match encoder.as_mut() {
                    Some(e) => report.inference += encode_group(e, &mut group, budget),
                    None => {
                        for doc in group.iter_mut().filter(|d| d.error.is_none()) {
                            doc.fail(
                                ErrorKind::ModelIncomplete,
                                "the model directory has no vision graph loaded".into(),
                                None,
                            );
                        }
                    }
                }
                // The group's time is shared out among its documents.
                let share = t.elapsed() / group.len() as u32;
                for (doc, depth) in group.into_iter().zip(depths) {
                    report.record(share, depth);
                    if output.send(doc).is_err() {
                        break 'run;
                    }
                }
                working.set(held.is_some() || !input.is_empty());
            }
            working.set(false);
            (report, encoder)
        })
        .expect("spawn vision stage")
}

/// Encodes the pages of `group` in runs of at most `budget` patches, in order. A failed run
/// fails the documents with pages in it; the others go on. Each document's `vision` time is
/// the time of the runs its pages were in. Returns the time in the encoder.
fn encode_group(encoder: &mut VisionEncoder, group: &mut [Document], budget: usize) -> Duration {
    let pages: Vec<(usize, usize)> = group
        .iter()
        .enumerate()
        .filter(|(_, d)| d.error.is_none())
        .flat_map(|(d, doc)| {
            (0..doc.pages.len())
                .filter(move |&p| doc.pages[p].image.is_some())
                .map(move |p| (d, p))
        })
        .collect();
    let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut run_patches = 0;
    for (d, p) in pages {
        let n = group[d].pages[p]
            .image
            .as_ref()
            .map_or(0, |i| i.max_patches);
        match runs.last_mut() {
            Some(run) if run_patches + n <= budget => run.push((d, p)),
            _ => {
                runs.push(vec![(d, p)]);
                run_patches = 0;
            }
        }
        run_patches += n;
    }
    let mut vision_ms = vec![0.0; group.len()];
    let mut in_encoder = Duration::ZERO;
    for run in runs {
        let run: Vec<(usize, usize)> = run
            .into_iter()
            .filter(|&(d, _)| group[d].error.is_none())
            .collect();
        if run.is_empty() {
            continue;
        }
        let images: Vec<&ProcessedImage> = run
            .iter()
            .map(|&(d, p)| group[d].pages[p].image.as_ref().expect("an image"))
            .collect();
        let t = Instant::now();
        let result = match super::fault::injected(super::fault::Stage::Vision) {
            Some(error) => Err(error),
            None => encoder.encode(&images),
        };
        let took = t.elapsed();
        in_encoder += took;
        let mut docs: Vec<usize> = run.iter().map(|&(d, _)| d).collect();
        docs.dedup();
        for &d in &docs {
            vision_ms[d] += took.as_secs_f64() * 1e3;
        }
        match result {
            Ok(features) => {
                let hidden = encoder.hidden;
                let mut offset = 0;
                for (d, p) in run {
                    let page = &mut group[d].pages[p];
                    let n = page.image.as_ref().map_or(0, |i| i.num_soft_tokens) * hidden;
                    page.features = Some(features[offset..offset + n].to_vec());
                    offset += n;
                    // The pixels are not needed any more.
                    if let Some(image) = page.image.as_mut() {
                        image.pixel_values = Vec::new();
                    }
                }
            }
            Err(e) => {
                for d in docs {
                    group[d].fail(ErrorKind::VisionFailed, e.to_string(), None);
                }
            }
        }
    }
    for (doc, ms) in group.iter_mut().zip(vision_ms) {
        if doc.error.is_none() || ms > 0.0 {
            doc.timings_ms.insert("vision".into(), ms);
        }
    }
    in_encoder
}
