//! The parent ↔ PDFium worker protocol.
//!
//! * Parent → worker, on the worker's stdin: one [`RenderJob`] per line, as JSON; its path as
//!   the bytes of the file name (an array of numbers), since names need not be UTF-8.
//! * Worker → parent, on its stdout: frames of `u32 LE header length`, `u64 LE payload length`,
//!   the header ([`Reply`] as JSON), then the payload (for [`Reply::Page`] raw RGB8 rows, then
//!   the boxes of its text layer's characters, see [`crate::text_layer`]; empty otherwise). The first frame is [`Reply::Ready`] (or [`Reply::Fatal`]); each job ends with
//!   [`Reply::Done`]. End of file means the worker died.

use crate::error::ErrorKind;
use quire_onnx::gemma4::image_processor::Budget;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Largest header accepted (the text layer of one page travels in it).
pub const MAX_HEADER: u32 = 64 << 20;
/// Largest payload accepted: budget 1120 is at most ~2.6 Mpx, i.e. ~8 MB of RGB.
pub const MAX_PAYLOAD: u64 = 256 << 20;

/// Render pages `start_page..end_page` of `path`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    #[serde(with = "path_bytes")]
    pub path: PathBuf,
    #[serde(default)]
    pub password: Option<String>,
    pub budget: Budget,
    #[serde(default)]
    pub start_page: u32,
    /// Stop before this page (`None`: render to the last page).
    #[serde(default)]
    pub end_page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// PDFium is loaded; jobs may come.
    Ready,
    /// The worker cannot work at all (PDFium failed to load); it exits after this.
    Fatal { message: String },
    /// The document opened.
    Opened { page_count: u32 },
    /// One rendered page; the payload is `width * height * 3` bytes of RGB8, then
    /// `char_boxes` boxes of [`crate::text_layer::BOX_BYTES`] bytes: one per `char` of `text`
    /// (or none).
    Page {
        index: u32,
        width: u32,
        height: u32,
        /// Page size in points (width, height) as displayed.
        points: (f32, f32),
        text: String,
        #[serde(default)]
        char_boxes: u32,
        render_ms: f64,
    },
    /// One page failed; the job goes on with the next page.
    PageError {
        index: u32,
        kind: ErrorKind,
        message: String,
    },
    /// The document failed (could not open, no pages); `Done` follows.
    DocError { kind: ErrorKind, message: String },
    /// The job is finished.
    Done,
}

/// A path as its bytes: a JSON string holds only UTF-8, a file name any bytes but `/` and NUL.
mod path_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(path.as_os_str().as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Vec::<u8>::deserialize(d).map(|bytes| PathBuf::from(OsString::from_vec(bytes)))
    }
}

/// Writes one frame and flushes.
pub fn write_frame(out: &mut impl Write, reply: &Reply, payload: &[u8]) -> std::io::Result<()> {
    let header = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    out.write_all(&(header.len() as u32).to_le_bytes())?;
    out.write_all(&(payload.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    out.write_all(payload)?;
    out.flush()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("worker output ended")]
    Eof,
    #[error("worker output ended in the middle of a frame")]
    Truncated,
    #[error("bad frame from worker: {0}")]
    Bad(String),
    #[error("reading from worker: {0}")]
    Io(std::io::Error),
}

/// Reads one frame: the reply and its payload.
pub fn read_frame(input: &mut impl Read) -> Result<(Reply, Vec<u8>), FrameError> {
    let mut lengths = [0u8; 12];
    // Distinguish a clean end between frames from a cut inside one.
    let mut got = 0;
    while got < lengths.len() {
        match input.read(&mut lengths[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Eof),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let header_len = u32::from_le_bytes(lengths[..4].try_into().unwrap());
    let payload_len = u64::from_le_bytes(lengths[4..].try_into().unwrap());
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(FrameError::Bad(format!(
            "frame too large (header {header_len}, payload {payload_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    read_exact(input, &mut header)?;
    let reply: Reply =
        serde_json::from_slice(&header).map_err(|e| FrameError::Bad(e.to_string()))?;
    let mut payload = vec![0u8; payload_len as usize];
    read_exact(input, &mut payload)?;
    Ok((reply, payload))
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        let page = Reply::Page {
            index: 2,
            width: 2,
            height: 1,
            points: (595.0, 842.0),
            text: "Invoice\r\nTotal".into(),
            char_boxes: 0,
            render_ms: 1.5,
        };
        write_frame(&mut wire, &Reply::Ready, &[]).unwrap();
        write_frame(&mut wire, &page, &[1, 2, 3, 4, 5, 6]).unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap(), (Reply::Ready, vec![]));
        assert_eq!(read_frame(&mut r).unwrap(), (page, vec![1, 2, 3, 4, 5, 6]));
        assert!(matches!(read_frame(&mut r), Err(FrameError::Eof)));
        let mut cut = &wire[..wire.len() - 1];
        read_frame(&mut cut).unwrap();
        assert!(matches!(read_frame(&mut cut), Err(FrameError::Truncated)));
    }

    #[test]
    fn garbage_is_an_error_not_a_huge_allocation() {
        let mut r = &[0xffu8; 64][..];
        assert!(matches!(read_frame(&mut r), Err(FrameError::Bad(_))));
    }

    #[test]
    fn job_json() {
        let job: RenderJob =
            serde_json::from_str(r#"{"path":[97,46,112,100,102],"budget":280}"#).unwrap();
        assert_eq!(job.path, PathBuf::from("a.pdf"));
        assert_eq!(job.budget.soft_tokens(), 280);
        assert_eq!(job.start_page, 0);
        assert!(job.password.is_none());
    }

    #[test]
    fn any_file_name_survives_the_trip() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/in/\xff-x\n\"y\".pdf"));
        let job = RenderJob {
            path: path.clone(),
            password: None,
            budget: serde_json::from_str("70").unwrap(),
            start_page: 0,
            end_page: None,
        };
        let line = serde_json::to_string(&job).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");
        let back: RenderJob = serde_json::from_str(&line).unwrap();
        assert_eq!(back.path, path);
    }
}
