//! The Gemma 4 image processor (`Gemma4ImageProcessor`): the resize rule that turns an image
//! and a visual token budget into the pixel size the vision encoder sees.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Soft tokens per image that Gemma 4 supports (`max_soft_tokens`).
pub const SUPPORTED_BUDGETS: [u32; 5] = [70, 140, 280, 560, 1120];

/// A visual token budget: at most this many soft tokens per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "u32", into = "u32")]
pub struct Budget(u32);

impl Budget {
    pub fn soft_tokens(self) -> u32 {
        self.0
    }

    /// Patch rows the processor pads to: `budget * pooling_kernel_size²`.
    pub fn max_patches(self, rule: &ResizeRule) -> u32 {
        self.0 * rule.pooling_kernel_size * rule.pooling_kernel_size
    }

    pub fn all() -> impl Iterator<Item = Budget> {
        SUPPORTED_BUDGETS.into_iter().map(Budget)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("visual token budget {0} is not one of 70, 140, 280, 560, 1120")]
pub struct UnsupportedBudget(pub u32);

impl TryFrom<u32> for Budget {
    type Error = UnsupportedBudget;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        if SUPPORTED_BUDGETS.contains(&n) {
            Ok(Budget(n))
        } else {
            Err(UnsupportedBudget(n))
        }
    }
}

impl From<Budget> for u32 {
    fn from(b: Budget) -> u32 {
        b.0
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("visual token budget must be a number, got {s:?}"))?;
        Budget::try_from(n).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Patch geometry from `processor_config.json` (`patch_size`, `pooling_kernel_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeRule {
    pub patch_size: u32,
    pub pooling_kernel_size: u32,
}

impl Default for ResizeRule {
    fn default() -> Self {
        ResizeRule {
            patch_size: 16,
            pooling_kernel_size: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("image of {width}x{height} cannot be resized for budget {budget}: too thin")]
pub struct TooThin {
    pub width: f64,
    pub height: f64,
    pub budget: u32,
}

impl ResizeRule {
    /// Side of one soft token in pixels (`patch_size * pooling_kernel_size`, 48).
    pub fn side(&self) -> u32 {
        self.patch_size * self.pooling_kernel_size
    }

    /// `(height, width)` in pixels the processor resizes an image of `height`×`width` to: the
    /// largest multiple-of-`side` size within `budget * k²` patches keeping the aspect ratio.
    /// Only the aspect ratio matters, so a PDF page can pass its size in points.
    pub fn target_size(&self, height: f64, width: f64, budget: Budget) -> Result<(u32, u32), TooThin> {
        let max_patches = budget.max_patches(self) as f64;
        let patch = self.patch_size as f64;
        let side = self.side() as f64;
        let too_thin = TooThin {
            width,
            height,
            budget: budget.0,
        };
        if !(height > 0.0 && width > 0.0 && height.is_finite() && width.is_finite()) {
            return Err(too_thin);
        }
        // Same operations in the same order as the reference, in f64 like Python floats.
        let target_px = max_patches * patch * patch;
        let factor = (target_px / (height * width)).sqrt();
        let mut th = ((factor * height) / side).floor() * side;
        let mut tw = ((factor * width) / side).floor() * side;
        let max_side = (budget.max_patches(self) / (self.pooling_kernel_size * self.pooling_kernel_size))
            as f64
            * side;
        if th == 0.0 && tw == 0.0 {
            return Err(too_thin);
        }
        if th == 0.0 {
            th = side;
            tw = ((width / height).floor() * side).min(max_side);
        } else if tw == 0.0 {
            tw = side;
            th = ((height / width).floor() * side).min(max_side);
        }
        Ok((th as u32, tw as u32))
    }

    /// Soft tokens an image of `height`×`width` pixels (already resized) yields.
    pub fn soft_tokens(&self, height: u32, width: u32) -> u32 {
        (height / self.side()) * (width / self.side())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u32) -> Budget {
        Budget::try_from(n).unwrap()
    }

    #[test]
    fn reference_sizes_at_budget_280() {
        // Contract §2.2: the transformers.js tests labelled "Python ref" (W×H in, W×H out).
        let rule = ResizeRule::default();
        for (w, h, tw, th, tokens) in [
            (640.0, 480.0, 912, 672, 266),
            (612.0, 408.0, 960, 624, 260),
            (224.0, 224.0, 768, 768, 256),
            (1280.0, 640.0, 1104, 528, 253),
        ] {
            let (rh, rw) = rule.target_size(h, w, b(280)).unwrap();
            assert_eq!((rw, rh), (tw, th), "{w}x{h}");
            assert_eq!(rule.soft_tokens(rh, rw), tokens, "{w}x{h}");
        }
    }

    #[test]
    fn budget_table_of_the_contract() {
        let rule = ResizeRule::default();
        // (budget, [(H, W) -> (th, tw, tokens)] for 1000×1000, 768×1024, 1080×1920)
        let table: [(u32, [(u32, u32, u32); 3]); 5] = [
            (70, [(384, 384, 64), (336, 432, 63), (288, 528, 66)]),
            (140, [(528, 528, 121), (480, 624, 130), (384, 720, 120)]),
            (280, [(768, 768, 256), (672, 912, 266), (576, 1056, 264)]),
            (560, [(1104, 1104, 529), (960, 1296, 540), (816, 1488, 527)]),
            (1120, [(1584, 1584, 1089), (1344, 1824, 1064), (1200, 2112, 1100)]),
        ];
        let inputs = [(1000.0, 1000.0), (768.0, 1024.0), (1080.0, 1920.0)];
        for (budget, expected) in table {
            for ((h, w), (th, tw, tokens)) in inputs.iter().zip(expected) {
                let got = rule.target_size(*h, *w, b(budget)).unwrap();
                assert_eq!(got, (th, tw), "budget {budget}, {h}x{w}");
                assert_eq!(rule.soft_tokens(got.0, got.1), tokens);
                assert!(tokens <= budget);
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios_stay_within_budget() {
        let rule = ResizeRule::default();
        for budget in Budget::all() {
            for (h, w) in [(10.0, 5000.0), (5000.0, 10.0), (1.0, 1.0), (842.0, 595.0), (595.0, 842.0)] {
                let (th, tw) = rule.target_size(h, w, budget).unwrap();
                assert_eq!(th % 48, 0);
                assert_eq!(tw % 48, 0);
                assert!(rule.soft_tokens(th, tw) <= budget.soft_tokens(), "{h}x{w} at {budget}");
            }
        }
        assert!(rule.target_size(0.0, 10.0, b(70)).is_err());
    }

    #[test]
    fn budget_parsing() {
        assert_eq!("560".parse::<Budget>().unwrap().soft_tokens(), 560);
        assert!("100".parse::<Budget>().unwrap_err().contains("70, 140"));
        assert!("abc".parse::<Budget>().is_err());
    }
}
