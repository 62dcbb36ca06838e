//! Schema validity of `extract` through the whole generate path (vision, prompt, batched
//! decoding with the llguidance mask, validation) with the random-weight tiny Gemma 4: every
//! output of 200 documents × 3 schemas must validate against its schema with an independent
//! validator (the `jsonschema` crate), and none may be cut off.

use quire_exporters::formats::{Exporter, Format};
use quire_onnx::gemma4::{Budget, Gemma4, LoadOptions, Rgb8, Sampling};
use quire_onnx::provision::Provisioner;
use quire_pipeline::run::task::Task;
use quire_pipeline::run::{compile_constraint, run, Document, RunSettings};
use quire_pipeline::sniff::InputFormat;
use quire_pipeline::Page;
use quire_pipeline::Source;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DOCUMENTS: usize = 200;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4")
}

/// A deterministic noise image per document, so every document gets different features.
fn image(seed: u64, width: u32, height: u32) -> Rgb8 {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data = (0..width * height * 3)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    Rgb8 {
        width,
        height,
        data,
    }
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "nested",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"]}},
                "required": ["name", "address"]}),
        ),
        (
            "array_enum_numbers",
            json!({"type": "object", "properties": {
                "items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
                    "sku": {"type": "string", "maxLength": 8},
                    "qty": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "price": {"type": "number", "minimum": 0, "maximum": 10000}},
                    "required": ["sku", "qty", "price"]}},
                "currency": {"enum": ["EUR", "USD", "GBP"]},
                "paid": {"type": "boolean"}},
                "required": ["items", "currency", "paid"]}),
        ),
        (
            "nullable_date",
            json!({"type": "object", "properties": {
                "date": {"type": "string", "format": "date"},
                "due": {"type": ["string", "null"], "format": "date"},
                "total": {"type": ["number", "null"], "minimum": 0, "maximum": 100000},
                "note": {"type": "string", "maxLength": 16, "nullable": true}},
                "required": ["date", "due", "total", "note"]}),
        ),
    ]
}

#[test]
fn every_extraction_is_schema_valid() {
    let provisioner = Provisioner::from_env(false);
    let (env, _) = quire_onnx::runtime::environment(&provisioner, false).expect("ONNX Runtime");
    let budget = Budget::try_from(70).unwrap();
    let max_new_tokens = 256;
    for (name, schema) in schemas() {
        let model = Gemma4::load(env, model_dir(), &LoadOptions::default()).expect("tiny model");
        let constraint = compile_constraint(&model, &schema, max_new_tokens).expect("schema");
        let out = tempfile::tempdir().unwrap();
        let exporter = Exporter::new(out.path(), &[Format::Json], 0o600, Some(&schema)).unwrap();
        let sources: Arc<Vec<Source>> = Arc::new(
            (0..DOCUMENTS)
                .map(|i| Source {
                    path: PathBuf::from(format!("doc{i:03}.png")),
                    relative: PathBuf::from(format!("doc{i:03}.png")),
                    format: InputFormat::Png,
                })
                .collect(),
        );
        let documents = (0..DOCUMENTS).map(|i| {
            let pixels = image(i as u64, 64 + (i as u32 % 5) * 16, 48 + (i as u32 % 3) * 16);
            let page = Page {
                source: PathBuf::from(format!("doc{i:03}.png")),
                relative: PathBuf::from(format!("doc{i:03}.png")),
                page_index: 0,
                page_count: Some(1),
                image: image::RgbImage::from_raw(pixels.width, pixels.height, pixels.data)
                    .expect("RGB pixels"),
                original_px: None,
                points: None,
                text_layer: None,
                render_ms: 0.0,
            };
            Document::rendered(i, format!("{i:064}"), Ok(vec![page]), 0.0)
        });
        let settings = RunSettings {
            task: Task::Extract {
                schema: schema.clone(),
            },
            budget,
            max_new_tokens,
            // Sampling explores far more of each grammar than greedy decoding would.
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 7,
            },
            text_anchor: false,
            skip_blank_pages: true,
            batch_size: 8,
            batch_tokens: 16384,
            vision_patches: 20160,
            max_pages_per_prompt: 4,
            null_below: None,
            review_below: None,
            thinking: false,
            ignore_eos: false,
            model_id: "tiny-gemma4".into(),
            dtype: "fp32".into(),
            execution_provider: "cpu".into(),
            schema_name: Some(name.into()),
            loop_guard: Default::default(),
            fingerprint: String::new(),
        };
        let (summary, _model) = run(
            model,
            Some(Arc::new(constraint)),
            settings,
            sources,
            documents,
            exporter,
            |_| {},
        );
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&without_nullable(&schema))
            .unwrap();
        assert_eq!(summary.records.len(), DOCUMENTS);
        let mut distinct = std::collections::HashSet::new();
        let mut nulls = 0;
        for record in &summary.records {
            assert!(
                record.error.is_none(),
                "{name}: {}: {:?}",
                record.source,
                record.error
            );
            let data = record.data.as_ref().expect("data");
            assert!(validator.is_valid(data), "{name}: invalid output {data}");
            // The written file holds the same object.
            let written: Value = serde_json::from_slice(
                &std::fs::read(out.path().join(format!("{}.json", record.source))).unwrap(),
            )
            .unwrap();
            assert_eq!(&written["data"], data);
            assert!(record.tokens.generated as usize <= max_new_tokens);
            nulls += data
                .as_object()
                .unwrap()
                .values()
                .filter(|v| v.is_null())
                .count();
            distinct.insert(data.to_string());
        }
        if name == "nullable_date" {
            assert!(nulls > 0, "nullable fields never produced null");
        }
        let prompt: u64 = summary.records.iter().map(|r| r.tokens.prompt).sum();
        println!(
            "{name}: {DOCUMENTS}/{DOCUMENTS} valid, {} distinct, {nulls} nulls, {:.1} s, \
             {:.0} prompt and {:.0} generated tokens per document",
            distinct.len(),
            summary.wall.as_secs_f64(),
            prompt as f64 / DOCUMENTS as f64,
            summary.generated_tokens() as f64 / DOCUMENTS as f64,
        );
        for stage in &summary.stages {
            println!("  {} busy {:.1} s", stage.name, stage.busy.as_secs_f64());
        }
    }
}

/// The same schema for an independent validator, with OpenAPI `nullable` written as JSON
/// Schema (a validator ignores `nullable`, which would reject the nulls the schema allows).
fn without_nullable(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            let nullable = map.get("nullable") == Some(&Value::Bool(true));
            for (k, v) in map {
                if k == "nullable" {
                    continue;
                }
                out.insert(k.clone(), without_nullable(v));
            }
            if nullable {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(without_nullable).collect()),
        other => other.clone(),
    }
}
