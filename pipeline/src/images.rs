//! Images (PNG, JPEG, TIFF including multi-page, WebP): decoded under limits, flattened to RGB
//! and resized to exactly what the Gemma 4 image processor would produce.

use crate::error::{DocError, ErrorKind};
use crate::sniff::{open_regular, InputFormat};
use image::{DynamicImage, ImageDecoder, RgbImage, RgbaImage};
use quire_onnx::gemma4::image_processor::{resize_bicubic, Budget, ResizeRule, Rgb8, TooThin};
use std::io::{BufReader, Read};
use std::path::Path;

/// Decoder limits: no decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Most pixels (width × height) of one image or TIFF page.
    pub max_pixels: u64,
    /// Most bytes a decoder may allocate for one image.
    pub max_alloc: u64,
    /// Most pages of a multi-page TIFF.
    pub max_frames: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_pixels: 100_000_000,
            max_alloc: 1 << 30,
            max_frames: 2_000,
        }
    }
}

/// Resizes `img` to the size [`ResizeRule::target_size`] gives for `budget`, with the model's
/// own bicubic resampler (`quire_onnx::gemma4::image_processor::resize_bicubic`, PIL-exact), so
/// the result is bit for bit what the image processor would feed the vision encoder. An image
/// already at that size is returned unchanged.
pub fn resize_for_budget(
    img: &RgbImage,
    budget: Budget,
    rule: &ResizeRule,
) -> Result<RgbImage, TooThin> {
    into_budget_size(img.clone(), budget, rule)
}

/// [`resize_for_budget`] taking ownership (no copy when the image is already at its size).
pub fn into_budget_size(
    img: RgbImage,
    budget: Budget,
    rule: &ResizeRule,
) -> Result<RgbImage, TooThin> {
    let (th, tw) = rule.target_size(img.height() as f64, img.width() as f64, budget)?;
    if (tw, th) == img.dimensions() {
        return Ok(img);
    }
    let (width, height) = img.dimensions();
    let src = Rgb8 {
        width,
        height,
        data: img.into_raw(),
    };
    let out = resize_bicubic(&src, tw, th);
    Ok(RgbImage::from_raw(out.width, out.height, out.data).expect("resize_bicubic output size"))
}

/// Flattens any image to RGB8 as the model's image processor does ([`Rgb8::from_image`]):
/// alpha is composited onto white (`convert_to_rgb`).
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        let rgb = Rgb8::from_image(&img);
        RgbImage::from_raw(rgb.width, rgb.height, rgb.data).expect("Rgb8 size")
    } else {
        match img {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        }
    }
}

/// Decodes every page of the image at `path` (one for PNG, JPEG and WebP, each page of a TIFF)
/// and hands each to `page(index, image)` as soon as it is decoded.
pub fn decode_pages(
    path: &Path,
    format: InputFormat,
    limits: &ImageLimits,
    mut page: impl FnMut(u32, RgbImage),
) -> Result<u32, DocError> {
    match format {
        InputFormat::Tiff => decode_tiff(path, limits, page),
        InputFormat::Jpeg => {
            page(0, decode_jpeg(path, limits)?);
            Ok(1)
        }
        InputFormat::Png | InputFormat::Webp => {
            page(0, decode_single(path, format, limits)?);
            Ok(1)
        }
        InputFormat::Pdf => Err(DocError::new(
            path,
            ErrorKind::UnsupportedFormat,
            "a PDF is not an image",
        )),
    }
}

fn decode_single(
    path: &Path,
    format: InputFormat,
    limits: &ImageLimits,
) -> Result<RgbImage, DocError> {
    let image_format = match format {
        InputFormat::Png => image::ImageFormat::Png,
        InputFormat::Webp => image::ImageFormat::WebP,
        _ => unreachable!("decode_single is for single-image formats"),
    };
    let file = open_regular(path).map_err(|e| crate::error::io_error(path, &e))?;
    let mut reader = image::ImageReader::with_format(BufReader::new(file), image_format);
    let mut image_limits = image::Limits::default();
    let side = limits.max_pixels.min(u32::MAX as u64) as u32;
    image_limits.max_image_width = Some(side);
    image_limits.max_image_height = Some(side);
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let decoder = reader.into_decoder().map_err(|e| image_error(path, e))?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, w, h, limits)?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e))?;
    Ok(to_rgb(img))
}

/// A JPEG, decoded by zune-jpeg (the decoder behind `image`'s) in strict mode: `image` decodes
/// leniently, and a truncated file or damaged data then comes out with grey rows and no error.
/// Strict, those are errors: a page the model would half see is a failed document, not a result.
fn decode_jpeg(path: &Path, limits: &ImageLimits) -> Result<RgbImage, DocError> {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace};
    let mut bytes = Vec::new();
    open_regular(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| crate::error::io_error(path, &e))?;
    let side = limits.max_pixels.min(u16::MAX as u64) as usize;
    let options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&bytes[..]), options);
    decoder.decode_headers().map_err(|e| jpeg_error(path, e))?;
    let (w, h) = decoder.dimensions().expect("headers decoded");
    let (w, h) = (w as u32, h as u32);
    check_pixels(path, w, h, limits)?;
    let gray = matches!(
        decoder.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    if w as u64 * h as u64 * out.num_components() as u64 > limits.max_alloc {
        return Err(DocError::new(
            path,
            ErrorKind::ImageTooLarge,
            format!(
                "image is {w}x{h}: decoding it needs more than the limit of {} bytes",
                limits.max_alloc
            ),
        ));
    }
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(|e| jpeg_error(path, e))?;
    let img = if gray {
        image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    };
    let img = img.ok_or_else(|| {
        DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            "the JPEG decoder returned fewer pixels than the image has",
        )
    })?;
    Ok(to_rgb(img))
}

fn jpeg_error(path: &Path, err: zune_jpeg::errors::DecodeErrors) -> DocError {
    use zune_jpeg::errors::DecodeErrors as E;
    use zune_jpeg::zune_core::bytestream::ZByteIoError;
    let (kind, message) = match err {
        E::LargeDimensions(_) => (
            ErrorKind::ImageTooLarge,
            format!("JPEG exceeds the decoder limits: {err}"),
        ),
        E::Unsupported(_) => (
            ErrorKind::ImageCorrupt,
            format!("unsupported JPEG variant: {err}"),
        ),
        // What strict mode says where the data runs out before the image does.
        E::ExhaustedData
        | E::FormatStatic("Premature end of buffer")
        | E::IoErrors(ZByteIoError::NotEnoughBytes(..)) => {
            (ErrorKind::ImageCorrupt, TRUNCATED_JPEG.to_string())
        }
        other => (
            ErrorKind::ImageCorrupt,
            format!(
                "cannot decode JPEG: {}",
                other.to_string().trim_matches('"')
            ),
        ),
    };
    DocError::new(path, kind, message)
}

const TRUNCATED_JPEG: &str = "JPEG is truncated (the file ends before the image data does)";

fn check_pixels(path: &Path, w: u32, h: u32, limits: &ImageLimits) -> Result<(), DocError> {
    if w == 0 || h == 0 {
        return Err(DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            format!("image has no pixels ({w}x{h})"),
        ));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(DocError::new(
            path,
            ErrorKind::ImageTooLarge,
            format!(
                "image is {w}x{h} = {} pixels, more than the limit of {} pixels",
                w as u64 * h as u64,
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

fn image_error(path: &Path, err: image::ImageError) -> DocError {
    use image::ImageError as E;
    match err {
        E::Limits(e) => DocError::new(
            path,
            ErrorKind::ImageTooLarge,
            format!("image exceeds the decoder limits: {e}"),
        ),
        E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            "image is truncated (unexpected end of file)",
        ),
        E::IoError(e) => crate::error::io_error(path, &e),
        E::Unsupported(e) => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            format!("unsupported image variant: {e}"),
        ),
        other => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            format!("cannot decode image: {other}"),
        ),
    }
}

fn decode_tiff(
    path: &Path,
    limits: &ImageLimits,
    mut page: impl FnMut(u32, RgbImage),
) -> Result<u32, DocError> {
    use tiff::decoder::{Decoder, Limits};
    let file = open_regular(path).map_err(|e| crate::error::io_error(path, &e))?;
    let mut tiff_limits = Limits::default();
    tiff_limits.decoding_buffer_size = limits.max_alloc.min(usize::MAX as u64) as usize;
    let mut decoder = Decoder::new(BufReader::new(file))
        .map_err(|e| tiff_error(path, None, e))?
        .with_limits(tiff_limits);
    let mut index = 0u32;
    loop {
        if index >= limits.max_frames {
            return Err(DocError::new(
                path,
                ErrorKind::ImageTooLarge,
                format!("TIFF has more than {} pages", limits.max_frames),
            ));
        }
        let at = Some(index);
        let (w, h) = decoder.dimensions().map_err(|e| tiff_error(path, at, e))?;
        check_pixels(path, w, h, limits).map_err(|e| e.on_page(at))?;
        let color = decoder.colortype().map_err(|e| tiff_error(path, at, e))?;
        let data = decoder.read_image().map_err(|e| tiff_error(path, at, e))?;
        let rgb = tiff_to_rgb(w, h, color, data).ok_or_else(|| {
            DocError::new(
                path,
                ErrorKind::ImageCorrupt,
                format!("unsupported TIFF pixel format {color:?}"),
            )
            .on_page(at)
        })?;
        page(index, rgb);
        index += 1;
        if !decoder.more_images() {
            return Ok(index);
        }
        decoder
            .next_image()
            .map_err(|e| tiff_error(path, Some(index), e))?;
    }
}

fn tiff_error(path: &Path, page: Option<u32>, err: tiff::TiffError) -> DocError {
    use tiff::TiffError as E;
    let e = match err {
        E::LimitsExceeded => DocError::new(
            path,
            ErrorKind::ImageTooLarge,
            "TIFF exceeds the decoder limits",
        ),
        E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            "TIFF is truncated (unexpected end of file)",
        ),
        E::IoError(e) => crate::error::io_error(path, &e),
        E::UnsupportedError(e) => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            format!("unsupported TIFF variant: {e}"),
        ),
        other => DocError::new(
            path,
            ErrorKind::ImageCorrupt,
            format!("cannot decode TIFF: {other}"),
        ),
    };
    e.on_page(page)
}

/// Converts a decoded TIFF page to RGB8. The decoder has already inverted WhiteIsZero data.
fn tiff_to_rgb(
    w: u32,
    h: u32,
    color: tiff::ColorType,
    data: tiff::decoder::DecodingResult,
) -> Option<RgbImage> {
    use tiff::decoder::DecodingResult as D;
    use tiff::ColorType as C;
    let n = w as usize * h as usize;
    let samples: Vec<u8> = match data {
        D::U8(v) => v,
        D::U16(v) => v.into_iter().map(|x| (x >> 8) as u8).collect(),
        _ => return None,
    };
    let dynamic = match color {
        C::Gray(1) => {
            let row_bytes = (w as usize).div_ceil(8);
            if samples.len() < row_bytes * h as usize {
                return None;
            }
            let mut gray = Vec::with_capacity(n);
            for row in samples.chunks(row_bytes).take(h as usize) {
                for x in 0..w as usize {
                    let bit = (row[x / 8] >> (7 - (x % 8))) & 1;
                    gray.push(if bit == 1 { 255 } else { 0 });
                }
            }
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, gray)?)
        }
        C::Gray(8) | C::Gray(16) => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, samples)?)
        }
        C::GrayA(8) | C::GrayA(16) => {
            DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_raw(w, h, samples)?)
        }
        C::RGB(8) | C::RGB(16) => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, samples)?),
        C::RGBA(8) | C::RGBA(16) => DynamicImage::ImageRgba8(RgbaImage::from_raw(w, h, samples)?),
        C::CMYK(8) => {
            if samples.len() < n * 4 {
                return None;
            }
            let rgb = samples
                .chunks_exact(4)
                .take(n)
                .flat_map(|p| {
                    let k = 255 - p[3] as u32;
                    [0, 1, 2].map(|i| ((255 - p[i] as u32) * k / 255) as u8)
                })
                .collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, rgb)?)
        }
        _ => return None,
    };
    Some(to_rgb(dynamic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u32) -> Budget {
        Budget::try_from(n).unwrap()
    }

    #[test]
    fn resize_gives_the_rule_size_for_every_budget() {
        let rule = ResizeRule::default();
        for (w, h) in [(640, 480), (300, 1000), (2000, 24), (50, 50), (24, 2000)] {
            let img = RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
            for budget in Budget::all() {
                let (th, tw) = rule.target_size(h as f64, w as f64, budget).unwrap();
                let out = resize_for_budget(&img, budget, &rule).unwrap();
                assert_eq!(out.dimensions(), (tw, th), "{w}x{h} at {budget}");
                // A flat colour stays flat (no ringing on constant input).
                assert_eq!(out.get_pixel(tw / 2, th / 2), &image::Rgb([10, 200, 30]));
            }
        }
        let same = RgbImage::new(912, 672);
        assert_eq!(
            into_budget_size(same, b(280), &rule).unwrap().dimensions(),
            (912, 672)
        );
    }

    #[test]
    fn alpha_is_composited_onto_white() {
        let mut rgba = RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let rgb = to_rgb(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0), &image::Rgb([255, 255, 255]));
        assert_eq!(rgb.get_pixel(1, 0), &image::Rgb([0, 0, 0]));
    }

    #[test]
    fn pixel_limit_refuses_bombs_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        RgbImage::new(400, 300).save(&path).unwrap();
        let limits = ImageLimits {
            max_pixels: 100_000,
            ..ImageLimits::default()
        };
        let err =
            decode_pages(&path, InputFormat::Png, &limits, |_, _| panic!("decoded")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ImageTooLarge);
        assert_eq!(err.path, path);
    }

    #[test]
    fn multi_page_tiff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.tif");
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut enc = tiff::encoder::TiffEncoder::new(file).unwrap();
            enc.write_image::<tiff::encoder::colortype::Gray8>(30, 20, &[128u8; 600])
                .unwrap();
            enc.write_image::<tiff::encoder::colortype::RGB8>(10, 40, &[7u8; 1200])
                .unwrap();
        }
        let mut got = vec![];
        let n = decode_pages(
            &path,
            InputFormat::Tiff,
            &ImageLimits::default(),
            |i, img| got.push((i, img.dimensions(), *img.get_pixel(0, 0))),
        )
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            got,
            [
                (0, (30, 20), image::Rgb([128, 128, 128])),
                (1, (10, 40), image::Rgb([7, 7, 7]))
            ]
        );
    }

    #[test]
    fn truncated_png_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.png");
        RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 0]))
            .save(&path)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err =
            decode_pages(&path, InputFormat::Png, &ImageLimits::default(), |_, _| {}).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ImageCorrupt, "{err}");
        assert_eq!(err.path, path);
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_not_grey_rows() {
        let whole =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/receipt.jpg");
        let mut got = vec![];
        decode_pages(
            &whole,
            InputFormat::Jpeg,
            &ImageLimits::default(),
            |_, img| got.push(img.dimensions()),
        )
        .unwrap();
        assert_eq!(got.len(), 1, "the whole file decodes");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.jpg");
        let bytes = std::fs::read(&whole).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = decode_pages(&path, InputFormat::Jpeg, &ImageLimits::default(), |_, _| {
            panic!("decoded")
        })
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ImageCorrupt, "{err}");
        assert_eq!(err.path, path);
        assert!(err.message.contains("truncated"), "{err}");
    }
}
