//! Blank and near-blank pages, told from the rendered pixels before the model sees them: the
//! share of the page covered by "ink", i.e. pixels that differ from the page's background
//! colour. Made robust to what scanners add to an empty sheet:
//!
//! * a grey or tinted paper: the background is the page's most common colour (per channel),
//!   not white;
//! * sensor noise: a pixel is ink only beyond [`TOLERANCE`] from the background in some channel;
//! * specks of dust: a pixel is ink only with an ink pixel next to it (left, right, above or
//!   below), so isolated specks do not count, while the strokes of even small print do;
//! * a dark border or shadow along the edges: the outer [`MARGIN`] of each side is not looked
//!   at.
//!
//! A page is blank when its ink share is at most [`MAX_INK_SHARE`]: a single line of small
//! print is several times that at the smallest budget (see the tests).

use quire_onnx::gemma4::Rgb8;

/// Largest difference from the background, per channel (0–255), that is still background.
pub const TOLERANCE: u8 = 48;
/// Share of the width (height) left out at each side.
pub const MARGIN: f64 = 0.03;
/// Largest share of ink pixels of a blank page (0.02 % of the area looked at).
pub const MAX_INK_SHARE: f64 = 0.0002;

/// Whether the page shows nothing: at most [`MAX_INK_SHARE`] of it is ink.
pub fn is_blank(image: &Rgb8) -> bool {
    ink_share(image) <= MAX_INK_SHARE
}

/// The share of the page inside the margins that is ink (see the module documentation).
pub fn ink_share(image: &Rgb8) -> f64 {
    let (w, h) = (image.width as usize, image.height as usize);
    if w == 0 || h == 0 || image.data.len() < w * h * 3 {
        return 0.0;
    }
    let (mx, my) = (margin(w), margin(h));
    let (x0, x1, y0, y1) = (mx, w - mx, my, h - my);
    let pixel = |x: usize, y: usize| &image.data[(y * w + x) * 3..(y * w + x) * 3 + 3];

    let mut histograms = [[0u32; 256]; 3];
    for y in y0..y1 {
        for x in x0..x1 {
            for (c, &v) in pixel(x, y).iter().enumerate() {
                histograms[c][v as usize] += 1;
            }
        }
    }
    let background: [u8; 3] = std::array::from_fn(|c| {
        let most = histograms[c].iter().enumerate().max_by_key(|&(_, n)| *n);
        most.map_or(255, |(v, _)| v as u8)
    });
    let (iw, ih) = (x1 - x0, y1 - y0);
    let ink: Vec<bool> = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .map(|(x, y)| {
            pixel(x, y)
                .iter()
                .zip(background)
                .any(|(&v, b)| v.abs_diff(b) > TOLERANCE)
        })
        .collect();
    let at = |x: usize, y: usize| ink[y * iw + x];
    let mut count = 0usize;
    for y in 0..ih {
        for x in 0..iw {
            let neighbour = (x > 0 && at(x - 1, y))
                || (x + 1 < iw && at(x + 1, y))
                || (y > 0 && at(x, y - 1))
                || (y + 1 < ih && at(x, y + 1));
            if at(x, y) && neighbour {
                count += 1;
            }
        }
    }
    count as f64 / (iw * ih) as f64
}

/// Pixels left out at each end of a side of `n` pixels.
fn margin(n: usize) -> usize {
    ((n as f64 * MARGIN) as usize).min(n.saturating_sub(1) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An A4 page at budget 70, the smallest: 336 × 480 pixels.
    const W: u32 = 336;
    const H: u32 = 480;

    fn page(rgb: [u8; 3]) -> Rgb8 {
        Rgb8 {
            width: W,
            height: H,
            data: rgb.repeat((W * H) as usize),
        }
    }

    fn set(img: &mut Rgb8, x: u32, y: u32, rgb: [u8; 3]) {
        let i = ((y * img.width + x) * 3) as usize;
        img.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// A deterministic pseudo-random sequence (xorshift).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// `letters` letter-sized blocks (3 × 5 pixels, 2 apart), like a line of 10 pt print at
    /// this size, starting at (x, y).
    fn print_line(img: &mut Rgb8, x: u32, y: u32, letters: u32, rgb: [u8; 3]) {
        for l in 0..letters {
            for dx in 0..3 {
                for dy in 0..5 {
                    set(img, x + l * 5 + dx, y + dy, rgb);
                }
            }
        }
    }

    #[test]
    fn white_is_blank() {
        assert_eq!(ink_share(&page([255; 3])), 0.0);
        assert!(is_blank(&page([255; 3])));
    }

    #[test]
    fn specks_and_a_border_are_still_blank() {
        let mut img = page([255; 3]);
        // 0.2 % of the pixels dark specks at random places (a dirty scan), ...
        let mut noise = Noise(0x9e3779b97f4a7c15);
        let specks = (W * H) as u64 / 500;
        for _ in 0..specks {
            let v = (noise.next() % 128) as u8;
            set(
                &mut img,
                (noise.next() % W as u64) as u32,
                (noise.next() % H as u64) as u32,
                [v; 3],
            );
        }
        // ... and a 3-pixel black border (the scanner lid's edge).
        for x in 0..W {
            for t in 0..3 {
                set(&mut img, x, t, [0; 3]);
                set(&mut img, x, H - 1 - t, [0; 3]);
            }
        }
        for y in 0..H {
            for t in 0..3 {
                set(&mut img, t, y, [0; 3]);
                set(&mut img, W - 1 - t, y, [0; 3]);
            }
        }
        let share = ink_share(&img);
        assert!(share <= MAX_INK_SHARE, "{share}");
        assert!(is_blank(&img));
    }

    #[test]
    fn one_short_line_of_print_is_not_blank() {
        let mut img = page([255; 3]);
        // Ten letters: about a word or two.
        print_line(&mut img, 100, 200, 10, [90; 3]);
        let share = ink_share(&img);
        // 10 × 15 pixels of ink in the 316 × 452 pixels inside the margins.
        assert_eq!(share, 150.0 / (316.0 * 452.0));
        assert!(share > 3.0 * MAX_INK_SHARE, "{share}");
        assert!(!is_blank(&img));
    }

    #[test]
    fn a_grey_noisy_scan_background_is_blank_until_it_has_print() {
        // Recycled paper: grey-beige, ±20 of sensor noise per channel.
        let mut img = page([200, 195, 180]);
        let mut noise = Noise(42);
        for px in img.data.chunks_exact_mut(3) {
            for v in px {
                *v = (*v as i32 + (noise.next() % 41) as i32 - 20) as u8;
            }
        }
        assert_eq!(ink_share(&img), 0.0);
        assert!(is_blank(&img));
        // Blue ink on it: differs in one channel mostly.
        print_line(&mut img, 60, 300, 10, [40, 60, 170]);
        assert!(!is_blank(&img), "{}", ink_share(&img));
    }

    #[test]
    fn a_photo_or_a_dark_page_is_judged_by_its_own_background() {
        // A black page with one white line of print: the background is black.
        let mut img = page([0; 3]);
        print_line(&mut img, 100, 100, 10, [255; 3]);
        assert!(!is_blank(&img));
        assert!(is_blank(&page([0; 3])));
    }
}
