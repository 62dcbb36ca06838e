//! The Rust image processor against transformers' PIL backend (`reference.json`): shapes,
//! patch counts, positions and pixels for 7 images at all 5 budgets.

mod common;
use common::*;
use quire_onnx::gemma4::config::ImageProcessorConfig;
use quire_onnx::gemma4::{Budget, ImageProcessor};

#[test]
fn preprocessing_matches_reference_at_all_budgets() {
    let r = reference();
    let cfg = ImageProcessorConfig::load(&tiny_dir()).unwrap();
    let ip = ImageProcessor::from_config(&cfg).unwrap();
    let cases = r["preprocessing"].as_array().unwrap();
    assert!(cases.len() >= 35);
    let mut worst_u8 = 0i64;
    let mut exact_sums = 0;
    let mut budgets = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["image"].as_str().unwrap();
        let budget: Budget =
            Budget::try_from(c["max_soft_tokens"].as_u64().unwrap() as u32).unwrap();
        budgets.insert(budget.soft_tokens());
        let img = load_image(name);
        let p = ip.preprocess(&img, budget).unwrap();
        let ctx = format!("{name} @ {budget}");
        assert_eq!(
            p.max_patches,
            c["max_patches"].as_u64().unwrap() as usize,
            "{ctx}"
        );
        assert_eq!(
            p.resized_height as u64,
            c["resized_height"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            p.resized_width as u64,
            c["resized_width"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            p.num_patches as u64,
            c["num_patches"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            p.num_soft_tokens as u64,
            c["num_soft_tokens"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(p.pixel_values.len(), p.max_patches * 768, "{ctx}");
        // Positions: (x=col, y=row) row-major, then (-1,-1).
        let pw = c["patches_w"].as_u64().unwrap() as i64;
        for i in 0..p.max_patches {
            let expect = if i < p.num_patches {
                [i as i64 % pw, i as i64 / pw]
            } else {
                [-1, -1]
            };
            assert_eq!(
                &p.positions[i * 2..i * 2 + 2],
                &expect,
                "{ctx} position {i}"
            );
        }
        if let Some(pos) = c.get("image_position_ids") {
            let (shape, want) = bin_i64(pos);
            assert_eq!(shape, vec![p.max_patches, 2], "{ctx}");
            assert_eq!(p.positions, want, "{ctx} positions");
        }
        // Pixels: u8 levels, within one level everywhere; padding rows exactly 0.
        let u8s: Vec<i64> = p.pixel_values[..p.num_patches * 768]
            .iter()
            .map(|v| (v * 255.0).round() as i64)
            .collect();
        assert!(
            p.pixel_values[p.num_patches * 768..]
                .iter()
                .all(|v| *v == 0.0),
            "{ctx} padding"
        );
        for (i, v) in p.pixel_values[..p.num_patches * 768].iter().enumerate() {
            assert_eq!(
                *v,
                u8s[i] as f32 / 255.0,
                "{ctx}: value {i} is not f32(u8)/255"
            );
        }
        let first: Vec<i64> = c["pixel_first_row_u8"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let mut d = first
            .iter()
            .zip(&u8s[..768])
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap();
        let sums: Vec<i64> = c["pixel_row_u8_sums_first64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        for (row, want) in sums.iter().enumerate() {
            let got: i64 = u8s[row * 768..(row + 1) * 768].iter().sum();
            assert!(got == *want, "{ctx} row {row} sum {got} vs {want}");
        }
        let sum: i64 = u8s.iter().sum();
        if sum != c["pixel_u8_sum"].as_i64().unwrap() {
            eprintln!(
                "{ctx}: u8 sum {sum} vs {}, first-row diff {d}",
                c["pixel_u8_sum"]
            );
        } else {
            exact_sums += 1;
        }
        if let Some(px) = c.get("pixel_u8") {
            let (shape, want) = bin_bytes(px);
            assert_eq!(shape, vec![p.num_patches, 768], "{ctx}");
            d = d.max(
                want.iter()
                    .zip(&u8s)
                    .map(|(a, b)| (*a as i64 - b).abs())
                    .max()
                    .unwrap(),
            );
        }
        worst_u8 = worst_u8.max(d);
        let mean =
            p.pixel_values.iter().map(|v| *v as f64).sum::<f64>() / p.pixel_values.len() as f64;
        assert!(
            (mean - c["pixel_values_mean"].as_f64().unwrap()).abs() < 1.0 / 255.0,
            "{ctx} mean"
        );
    }
    assert_eq!(budgets.len(), 5);
    eprintln!(
        "preprocessing: {} cases, worst pixel diff {worst_u8}/255, exact u8 sums in {exact_sums}",
        cases.len()
    );
    assert_eq!(exact_sums, cases.len(), "every case is bit-exact with PIL");
    assert!(worst_u8 <= 1, "pixel values differ by {worst_u8}/255");
}
