//! `quire render`: pages exactly as the model will see them, as PNG files mirroring the input
//! tree under `--out`, plus `pages.jsonl` with one line per page or failure.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quire_exporters::atomic::{write_atomic, AtomicFile, DEFAULT_MODE};
use quire_exporters::layout::{display_relative, output_path, prepare_parent};
use quire_onnx::gemma4::image_processor::ResizeRule;
use quire_pipeline::settings::{self, RenderArgs};
use quire_pipeline::{DocError, ErrorKind, Page, PoolOptions, RenderEvent, WorkerCommand};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct PdfWorkerArgs {
    /// The PDFium library to load.
    #[arg(long, value_name = "LIB")]
    pdfium: PathBuf,
}

pub fn run(global: &super::Global, args: RenderArgs) -> anyhow::Result<u8> {
    let inputs = args.inputs;
    super::check_inputs_exist(&inputs)?;
    let resolved = settings::resolve_render(args.settings)?;
    let started = Instant::now();
    let out = resolved.out;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating the output folder {}", out.display()))?;
    let collected = quire_pipeline::sources::collect_excluding(&inputs, std::slice::from_ref(&out));
    let worker = if collected
        .sources
        .iter()
        .any(|s| s.format == quire_pipeline::sniff::InputFormat::Pdf)
    {
        let pdfium = global
            .provisioner()
            .ensure(&quire_pipeline::pdfium::PDFIUM)
            .context("PDFium is needed to render PDFs")?;
        let exe = std::env::current_exe().context("locating the quire executable")?;
        Some(WorkerCommand::quire(exe, &pdfium.library))
    } else {
        None
    };

    let jsonl_path = out.join("pages.jsonl");
    let mut jsonl = AtomicFile::create(&jsonl_path, DEFAULT_MODE)
        .with_context(|| format!("creating {}", jsonl_path.display()))?;

    let documents = collected.sources.len() as u64;
    let progress = progress_bar(documents);
    let mut tally = Tally::default();
    for error in &collected.errors {
        tally.error(&mut jsonl, error, &progress)?;
    }

    let mut opts = PoolOptions::new(resolved.budget, worker);
    if let Some(n) = resolved.workers {
        opts.workers = n;
    }
    // One long PDF uses every worker; outputs are per page, so page order does not matter.
    opts.split_long_documents = true;
    opts.password = resolved.password.map(|p| p.0);
    opts.page_timeout = resolved.page_timeout;
    opts.image_limits.max_pixels = resolved.max_pixels;
    let rule = opts.rule;

    for event in quire_pipeline::render::render(collected.sources, opts) {
        match event {
            RenderEvent::Page(page) => match write_page(&out, &page, &rule) {
                Ok(line) => {
                    writeln!(jsonl, "{line}")?;
                    tally.pages += 1;
                }
                Err(message) => {
                    let error = DocError::new(&page.source, ErrorKind::OutputFailed, message)
                        .on_page(Some(page.page_index));
                    tally.error(&mut jsonl, &error, &progress)?;
                }
            },
            RenderEvent::Error(error) => tally.error(&mut jsonl, &error, &progress)?,
            RenderEvent::Finished(_) => {
                tally.documents += 1;
                progress.inc(1);
            }
        }
        progress.set_message(format!(
            "{} pages, {} failures",
            tally.pages, tally.failures
        ));
    }
    progress.finish_and_clear();
    jsonl
        .commit()
        .with_context(|| format!("writing {}", jsonl_path.display()))?;

    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "rendered {} documents, {} pages in {secs:.1} s ({:.1} pages/s); {} failures{}",
        tally.documents,
        tally.pages,
        tally.pages as f64 / secs.max(1e-9),
        tally.failures,
        if tally.failures > 0 {
            format!(" (listed in {})", jsonl_path.display())
        } else {
            String::new()
        }
    );
    if !collected.skipped.is_empty() {
        eprintln!(
            "skipped {} files that are neither PDFs nor images",
            collected.skipped.len()
        );
    }
    Ok(if tally.failures > 0 {
        crate::exit::PARTIAL
    } else {
        crate::exit::OK
    })
}

#[derive(Default)]
struct Tally {
    documents: u64,
    pages: u64,
    failures: u64,
}

impl Tally {
    fn error(
        &mut self,
        jsonl: &mut AtomicFile,
        error: &DocError,
        progress: &ProgressBar,
    ) -> anyhow::Result<()> {
        self.failures += 1;
        let mut line = serde_json::to_value(error)?;
        line["type"] = json!("error");
        writeln!(jsonl, "{line}")?;
        progress.suspend(|| eprintln!("error: {error}"));
        Ok(())
    }
}

/// Writes the page's PNG (and its text layer, when it has one) and returns its JSON line.
fn write_page(out: &Path, page: &Page, rule: &ResizeRule) -> Result<serde_json::Value, String> {
    let stem = format!("p{:04}", page.page_index + 1);
    let png =
        output_path(out, &page.relative, &format!("{stem}.png")).map_err(|e| e.to_string())?;
    prepare_parent(out, &png).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(page.image.len() / 2);
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    );
    image::ImageEncoder::write_image(
        encoder,
        page.image.as_raw(),
        page.image.width(),
        page.image.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("encoding the PNG: {e}"))?;
    write_atomic(&png, &bytes, DEFAULT_MODE)
        .map_err(|e| format!("writing {}: {e}", png.display()))?;
    let mut text_file = None;
    if let Some(text) = page.text_layer.as_deref().filter(|t| !t.is_empty()) {
        let txt =
            output_path(out, &page.relative, &format!("{stem}.txt")).map_err(|e| e.to_string())?;
        write_atomic(&txt, text.as_bytes(), DEFAULT_MODE)
            .map_err(|e| format!("writing {}: {e}", txt.display()))?;
        text_file = Some(relative_to(out, &txt));
    }
    let (w, h) = page.image.dimensions();
    Ok(json!({
        "type": "page",
        "source": page.source,
        "relative": display_relative(&page.relative),
        "page_index": page.page_index,
        "page_count": page.page_count,
        "width": w,
        "height": h,
        "soft_tokens": rule.soft_tokens(h, w),
        "points": page.points.map(|(w, h)| [w, h]),
        "original_px": page.original_px.map(|(w, h)| [w, h]),
        "text_layer_chars": page.text_layer.as_ref().map(|t| t.chars().count()),
        "render_ms": (page.render_ms * 1000.0).round() / 1000.0,
        "png": relative_to(out, &png),
        "text": text_file,
    }))
}

fn relative_to(out: &Path, path: &Path) -> String {
    display_relative(path.strip_prefix(out).unwrap_or(path))
}

fn progress_bar(documents: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(documents);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} documents, {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn pdf_worker(args: PdfWorkerArgs) -> anyhow::Result<u8> {
    quire_pipeline::render::worker::run(&args.pdfium).context("PDF worker")?;
    Ok(crate::exit::OK)
}
