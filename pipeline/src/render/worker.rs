//! The PDFium worker: the child side of the protocol (`quire pdf-worker`). It loads PDFium once,
//! then renders jobs read from stdin, streaming frames to stdout. It may crash or hang on hostile
//! input; the pool in the parent kills and replaces it.
//!
//! Test hooks (read from the environment, for the crash and hang tests): a document whose path
//! contains `QUIRE_TEST_CRASH_ON` makes the worker `abort()` before each page, one whose path
//! contains `QUIRE_TEST_HANG_ON` makes it say so on stderr and sleep forever.

use super::protocol::{write_frame, RenderJob, Reply};
use crate::error::ErrorKind;
use crate::text_layer::TextLayer;
use pdfium_render::prelude::*;
use quire_onnx::gemma4::image_processor::ResizeRule;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

/// Runs the worker loop on this process's stdin/stdout until stdin closes.
pub fn run(pdfium_library: &Path) -> std::io::Result<()> {
    tune_malloc();
    let stdin = std::io::stdin().lock();
    let stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    serve(pdfium_library, stdin, stdout)
}

/// The worker loop over any reader/writer pair.
pub fn serve(
    pdfium_library: &Path,
    input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<()> {
    let pdfium = match crate::pdfium::bind(pdfium_library) {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            return write_frame(&mut out, &Reply::Fatal { message }, &[]);
        }
    };
    write_frame(&mut out, &Reply::Ready, &[])?;
    let mut renderer = Renderer::default();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let job: RenderJob = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        renderer.job(&pdfium, &job, &mut out)?;
        write_frame(&mut out, &Reply::Done, &[])?;
    }
    Ok(())
}

/// glibc's default malloc serves PDFium's ~9 MB per-page buffers with fresh mmaps and page-faults
/// on every page (measured: half the speed). Keep them in the heap instead.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// (width, height, points, text layer) of a page rendered into `Renderer::rgb`.
type Rendered = (u32, u32, (f32, f32), TextLayer);

#[derive(Default)]
struct Renderer {
    /// One bitmap reused while the page size stays the same.
    bitmap: Option<(i32, i32, PdfBitmap<'static>)>,
    rgb: Vec<u8>,
}

impl Renderer {
    fn job(
        &mut self,
        pdfium: &Pdfium,
        job: &RenderJob,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        let doc = match pdfium.load_pdf_from_file(&job.path, job.password.as_deref()) {
            Ok(doc) => doc,
            Err(e) => {
                let (kind, message) = open_error(&e, job.password.is_some());
                return write_frame(out, &Reply::DocError { kind, message }, &[]);
            }
        };
        let pages = doc.pages();
        let page_count = pages.len().max(0) as u32;
        write_frame(out, &Reply::Opened { page_count }, &[])?;
        if page_count == 0 {
            let reply = Reply::DocError {
                kind: ErrorKind::PdfNoPages,
                message: "the PDF has no pages".into(),
            };
            return write_frame(out, &reply, &[]);
        }
        let rule = ResizeRule::default();
        let end = job.end_page.map_or(page_count, |e| e.min(page_count));
        for index in job.start_page..end {
            test_hooks(&job.path);
            let started = Instant::now();
            let reply = match self.page(pages, index, job, &rule) {
                Ok((width, height, points, layer)) => {
                    // The boxes follow the pixels in the payload.
                    layer.boxes_to_bytes(&mut self.rgb);
                    Reply::Page {
                        index,
                        width,
                        height,
                        points,
                        char_boxes: layer.box_count() as u32,
                        text: layer.text().to_string(),
                        render_ms: started.elapsed().as_secs_f64() * 1e3,
                    }
                }
                Err((kind, message)) => Reply::PageError {
                    index,
                    kind,
                    message,
                },
            };
            let payload: &[u8] = match reply {
                Reply::Page { .. } => &self.rgb,
                _ => &[],
            };
            write_frame(out, &reply, payload)?;
        }
        Ok(())
    }

    /// Renders one page into `self.rgb`; returns (width, height, points, text layer).
    fn page(
        &mut self,
        pages: &PdfPages,
        index: u32,
        job: &RenderJob,
        rule: &ResizeRule,
    ) -> Result<Rendered, (ErrorKind, String)> {
        let page = pages.get(index as i32).map_err(|e| {
            (
                ErrorKind::PageFailed,
                format!("PDFium could not load the page ({})", short(&e)),
            )
        })?;
        let points = (page.width().value, page.height().value);
        let (th, tw) = rule
            .target_size(points.1 as f64, points.0 as f64, job.budget)
            .map_err(|_| {
                (
                    ErrorKind::BadPageSize,
                    format!("page size {}x{} pt cannot be rendered", points.0, points.1),
                )
            })?;
        let (w, h) = (tw as i32, th as i32);
        if !matches!(&self.bitmap, Some((bw, bh, _)) if (*bw, *bh) == (w, h)) {
            self.bitmap = None;
            let bitmap = PdfBitmap::empty(w, h, PdfBitmapFormat::BGR).map_err(|e| {
                (
                    ErrorKind::PageFailed,
                    format!("PDFium could not allocate a {w}x{h} bitmap ({})", short(&e)),
                )
            })?;
            self.bitmap = Some((w, h, bitmap));
        }
        let bitmap = &mut self.bitmap.as_mut().expect("set above").2;
        let config = PdfRenderConfig::new().set_fixed_size(w, h);
        page.render_into_bitmap_with_config(bitmap, &config)
            .map_err(|e| {
                (
                    ErrorKind::PageFailed,
                    format!("PDFium could not render the page ({})", short(&e)),
                )
            })?;
        let raw = bitmap.as_raw_bytes();
        bgr_to_rgb(&raw, tw, th, &mut self.rgb).map_err(|m| (ErrorKind::PageFailed, m))?;
        let text = page.text().map(|t| text_layer(&t)).unwrap_or_default();
        Ok((tw, th, points, text))
    }
}

/// The page's characters in PDFium's order with their loose boxes (see [`crate::text_layer`]
/// for why loose); characters PDFium generated (line breaks, inferred spaces) get none.
fn text_layer(text: &PdfPageText) -> TextLayer {
    TextLayer::from_chars(text.chars().iter().filter_map(|c| {
        let ch = c.unicode_char().filter(|&ch| ch != '\0')?;
        let generated = c.is_generated().unwrap_or(false);
        let bounds = (!generated)
            .then(|| c.loose_bounds().ok())
            .flatten()
            .map(|r| {
                [
                    r.left().value,
                    r.bottom().value,
                    r.right().value,
                    r.top().value,
                ]
            });
        Some((ch, bounds))
    }))
}

/// Copies BGR rows (with PDFium's stride padding) into tight RGB rows.
fn bgr_to_rgb(raw: &[u8], width: u32, height: u32, rgb: &mut Vec<u8>) -> Result<(), String> {
    let (w, h) = (width as usize, height as usize);
    let stride = raw.len().checked_div(h).unwrap_or(0);
    if stride < w * 3 {
        return Err(format!(
            "PDFium returned {} bytes for a {width}x{height} bitmap",
            raw.len()
        ));
    }
    rgb.clear();
    rgb.reserve(w * h * 3);
    for row in raw.chunks(stride).take(h) {
        for px in row[..w * 3].chunks_exact(3) {
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    Ok(())
}

fn open_error(err: &PdfiumError, had_password: bool) -> (ErrorKind, String) {
    match err {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            if had_password {
                (
                    ErrorKind::PdfWrongPassword,
                    "the PDF is encrypted and the password given is wrong".into(),
                )
            } else {
                (
                    ErrorKind::PdfEncrypted,
                    "the PDF is encrypted: give its password with --password or --password-file"
                        .into(),
                )
            }
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => (
            ErrorKind::PdfEncrypted,
            "the PDF uses a security handler PDFium does not support".into(),
        ),
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => (
            ErrorKind::PdfCorrupt,
            "not a readable PDF: the file is damaged, truncated or not a PDF".into(),
        ),
        PdfiumError::IoError(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (ErrorKind::NotFound, "no such file".into())
        }
        PdfiumError::IoError(e) => (ErrorKind::Io, format!("cannot read: {e}")),
        other => (
            ErrorKind::PdfCorrupt,
            format!("PDFium could not open the PDF ({})", short(other)),
        ),
    }
}

/// A one-line description of a PDFium error (its `Display` is multi-line debug output).
fn short(err: &PdfiumError) -> String {
    match err {
        PdfiumError::PdfiumLibraryInternalError(e) => format!("{e:?}"),
        PdfiumError::IoError(e) => e.to_string(),
        other => format!("{other:?}")
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    }
}

fn test_hooks(path: &Path) {
    let name = path.to_string_lossy();
    let matches = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|s| !s.is_empty())
            .is_some_and(|s| name.contains(&s))
    };
    if matches("QUIRE_TEST_CRASH_ON") {
        std::process::abort();
    }
    if matches("QUIRE_TEST_HANG_ON") {
        // Said, so that tests know the worker is stuck in a page (not waiting for a job).
        eprintln!("test hook: hanging on {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_stride_and_swaps_channels() {
        // 1x2 image with a stride of 4 bytes.
        let raw = [3, 2, 1, 0, 6, 5, 4, 0];
        let mut rgb = vec![];
        bgr_to_rgb(&raw, 1, 2, &mut rgb).unwrap();
        assert_eq!(rgb, [1, 2, 3, 4, 5, 6]);
        assert!(bgr_to_rgb(&raw[..4], 2, 2, &mut rgb).is_err());
    }
}
