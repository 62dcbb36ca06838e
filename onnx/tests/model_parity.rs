//! The Rust loop against transformers (`reference.json`) on the tiny model: vision features,
//! prefill logits, 32 greedy steps (crossing the 16-token sliding window), and a left-padded
//! batch of two giving the unbatched tokens.

mod common;
use common::*;
use quire_onnx::gemma4::{
    Budget, Dtype, DtypeSelection, FinishReason, Gemma4, GenerateOptions, LoadOptions,
    LogitsProcessor, Message, NoProcessor, Request, Sampling,
};
use serde_json::Value;

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).expect("reference messages deserialize")
}

#[test]
fn vision_features_match_reference() {
    let r = reference();
    let mut m = load_tiny();
    let v = &r["vision"];
    let budget = Budget::try_from(v["max_soft_tokens"].as_u64().unwrap() as u32).unwrap();
    let pre: Vec<_> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| preprocess_for_model(&m, p.as_str().unwrap(), Some(budget)))
        .collect();
    let counts: Vec<u64> = pre.iter().map(|p| p.num_soft_tokens as u64).collect();
    let want_counts: Vec<u64> = v["num_soft_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(counts, want_counts);
    let refs: Vec<_> = pre.iter().collect();
    let feats = m.encode_images(&refs).unwrap();
    let (shape, want) = bin_f32(&v["image_features"]);
    assert_eq!(feats.len(), shape[0] * shape[1]);
    let d = max_abs_diff(&feats, &want);
    eprintln!("vision features: max abs diff {d:.3e} over {:?}", shape);
    assert!(d <= 1e-5, "vision features differ by {d}");
}

#[test]
fn template_cases_render_and_tokenize_like_transformers() {
    let r = reference();
    let m = load_tiny();
    for c in r["template_cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let msgs = messages(&c["messages"]);
        let thinking = c["enable_thinking"].as_bool().unwrap_or(false);
        if c.get("tools").is_some() {
            continue; // tools are not part of the Message type yet
        }
        let text = m.prompt.render(&msgs, true, thinking).unwrap();
        assert_eq!(text, c["rendered"].as_str().unwrap(), "{name}");
        let ids = m.tokenizer.encode(&text).unwrap();
        assert_eq!(ids, u32s(&c["input_ids"]), "{name}");
    }
}

/// Prompt ids and images of one reference generation case, built the Rust way.
fn build_requests(
    m: &quire_onnx::gemma4::Gemma4,
    case: &Value,
) -> (Vec<Vec<u32>>, Vec<Vec<quire_onnx::gemma4::ProcessedImage>>) {
    let budget = case["max_soft_tokens"]
        .as_u64()
        .map(|b| Budget::try_from(b as u32).unwrap());
    let mut ids = Vec::new();
    let mut images = Vec::new();
    for (i, msgs) in case["messages"].as_array().unwrap().iter().enumerate() {
        let paths = case["images"][i].as_array().unwrap();
        let pre: Vec<_> = paths
            .iter()
            .map(|p| preprocess_for_model(m, p.as_str().unwrap(), budget))
            .collect();
        // The reference messages name their image files; the template only needs the type.
        let msgs: Vec<Message> = serde_json::from_value(strip_image_paths(msgs)).unwrap();
        let refs: Vec<_> = pre.iter().collect();
        ids.push(m.prompt_ids(&msgs, &refs, false).unwrap());
        images.push(pre);
    }
    (ids, images)
}

fn strip_image_paths(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.get("type").and_then(|t| t.as_str()) == Some("image") => {
            serde_json::json!({"type": "image"})
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), strip_image_paths(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_image_paths).collect()),
        other => other.clone(),
    }
}

/// Unpadded reference ids of row `b`.
fn ref_ids(case: &Value, b: usize) -> Vec<u32> {
    let ids = u32s(&case["input_ids"][b]);
    let mask = u32s(&case["attention_mask"][b]);
    ids.into_iter()
        .zip(mask)
        .filter(|(_, m)| *m == 1)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn single_sequence_prefill_logits_and_greedy_tokens_match() {
    let r = reference();
    let mut m = load_tiny();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: Some(vec![]), // the reference does not stop at EOS
        keep_prefill_logits: true,
        ..Default::default()
    };
    for case in r["generation"].as_array().unwrap() {
        if case["batch_size"].as_u64() != Some(1) {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let (ids, images) = build_requests(&m, case);
        assert_eq!(ids[0], ref_ids(case, 0), "{name}: prompt ids");
        let req = Request {
            input_ids: ids[0].clone(),
            images: images[0].iter().collect(),
            image_features: None,
        };
        let out = m.generate(&[req], &opts, &mut NoProcessor).unwrap();
        let seq = &out.sequences[0];
        let d = max_abs_diff(
            seq.prefill_logits.as_ref().unwrap(),
            &f32s(&case["prefill_last_logits"][0]),
        );
        eprintln!(
            "{name}: prefill logits max abs diff {d:.3e}, {} tokens",
            seq.generated_ids.len()
        );
        assert!(d <= 1e-4, "{name}: prefill logits differ by {d}");
        assert_eq!(
            seq.generated_ids,
            u32s(&case["greedy_tokens"][0]),
            "{name}: greedy tokens"
        );
        assert!(
            !m.softcap_in_rust(),
            "the tiny graph caps its logits itself"
        );
    }
}

#[test]
fn left_padded_batch_matches_unbatched_tokens() {
    let r = reference();
    let mut m = load_tiny();
    let case = r["generation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["batch_size"].as_u64() == Some(2))
        .expect("a batch case");
    let (ids, images) = build_requests(&m, case);
    let reqs: Vec<Request> = ids
        .iter()
        .zip(&images)
        .map(|(i, im)| Request {
            input_ids: i.clone(),
            images: im.iter().collect(),
            image_features: None,
        })
        .collect();
    for (b, row) in ids.iter().enumerate() {
        assert_eq!(row, &ref_ids(case, b), "row {b} prompt ids");
    }
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: Some(vec![]),
        keep_prefill_logits: true,
        ..Default::default()
    };
    let out = m.generate(&reqs, &opts, &mut NoProcessor).unwrap();
    for b in 0..2 {
        let seq = &out.sequences[b];
        let d = max_abs_diff(
            seq.prefill_logits.as_ref().unwrap(),
            &f32s(&case["prefill_last_logits"][b]),
        );
        eprintln!("batch row {b}: prefill logits max abs diff {d:.3e}");
        assert!(d <= 1e-4, "row {b}: prefill logits differ by {d}");
        assert_eq!(
            seq.generated_ids,
            u32s(&case["unbatched_greedy_tokens"][b]),
            "row {b}"
        );
    }
    // Unbatched runs of the same requests give the same tokens.
    for (b, req) in reqs.iter().enumerate() {
        let one = m
            .generate(std::slice::from_ref(req), &opts, &mut NoProcessor)
            .unwrap();
        assert_eq!(
            one.sequences[0].generated_ids,
            out.sequences[b].generated_ids
        );
    }
}

/// Stops one sequence after `after` tokens and bans `banned` everywhere.
struct StopAndBan {
    stop_seq: usize,
    after: usize,
    count: usize,
    banned: Option<u32>,
}

impl LogitsProcessor for StopAndBan {
    fn process(&mut self, _seq: usize, logits: &mut [f32]) {
        if let Some(b) = self.banned {
            logits[b as usize] = f32::NEG_INFINITY;
        }
    }
    fn on_token(&mut self, seq: usize, _token: u32, _logits: &[f32]) -> bool {
        if seq == self.stop_seq {
            self.count += 1;
            return self.count >= self.after;
        }
        false
    }
}

#[test]
fn a_finished_sequence_leaves_the_batch_without_changing_the_other() {
    let r = reference();
    let mut m = load_tiny();
    let case = r["generation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["batch_size"].as_u64() == Some(2))
        .unwrap();
    let (ids, images) = build_requests(&m, case);
    let reqs: Vec<Request> = ids
        .iter()
        .zip(&images)
        .map(|(i, im)| Request {
            input_ids: i.clone(),
            images: im.iter().collect(),
            image_features: None,
        })
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: Some(vec![]),
        ..Default::default()
    };
    // Row 1 (the longer prompt) stops early, so row 0's leading padding is trimmed from the
    // cache too; then the other way round.
    for stop_seq in [1usize, 0] {
        let mut p = StopAndBan {
            stop_seq,
            after: 5,
            count: 0,
            banned: None,
        };
        let out = m.generate(&reqs, &opts, &mut p).unwrap();
        let want: Vec<Vec<u32>> = (0..2)
            .map(|b| u32s(&case["unbatched_greedy_tokens"][b]))
            .collect();
        assert_eq!(
            out.sequences[stop_seq].generated_ids,
            want[stop_seq][..5].to_vec()
        );
        assert_eq!(
            out.sequences[stop_seq].finish_reason,
            FinishReason::Processor
        );
        let other = 1 - stop_seq;
        assert_eq!(
            out.sequences[other].generated_ids, want[other],
            "stop_seq {stop_seq}"
        );
        assert_eq!(out.timings.decode_step_s.len(), 31);
    }
}

#[test]
fn the_logits_processor_can_ban_tokens() {
    let r = reference();
    let mut m = load_tiny();
    let case = &r["generation"][1]; // text_prompt
    let ids = ref_ids(case, 0);
    let first = u32s(&case["greedy_tokens"][0])[0];
    let mut p = StopAndBan {
        stop_seq: 99,
        after: 0,
        count: 0,
        banned: Some(first),
    };
    let opts = GenerateOptions {
        max_new_tokens: 8,
        stop_ids: Some(vec![]),
        ..Default::default()
    };
    let req = Request {
        input_ids: ids,
        ..Default::default()
    };
    let out = m.generate(&[req], &opts, &mut p).unwrap();
    assert!(!out.sequences[0].generated_ids.contains(&first));
}

#[test]
fn fp16_graphs_give_the_reference_greedy_tokens() {
    let r = reference();
    let opts = LoadOptions {
        dtype: DtypeSelection::uniform(Dtype::Fp16),
        ..Default::default()
    };
    let mut m = Gemma4::load(env(), tiny_dir(), &opts).unwrap();
    let case = &r["generation"][0];
    let (ids, images) = build_requests(&m, case);
    let req = Request {
        input_ids: ids[0].clone(),
        images: images[0].iter().collect(),
        image_features: None,
    };
    let g = GenerateOptions {
        max_new_tokens: 32,
        stop_ids: Some(vec![]),
        keep_prefill_logits: true,
        ..Default::default()
    };
    let out = m.generate(&[req], &g, &mut NoProcessor).unwrap();
    let d = max_abs_diff(
        out.sequences[0].prefill_logits.as_ref().unwrap(),
        &f32s(&case["prefill_last_logits"][0]),
    );
    eprintln!("fp16 image_prompt: prefill logits max abs diff {d:.3e}");
    assert!(d < 5e-2);
    assert_eq!(
        out.sequences[0].generated_ids,
        u32s(&case["greedy_tokens"][0])
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_batch_independent() {
    let r = reference();
    let mut m = load_tiny();
    let reqs: Vec<Request> = (1..3)
        .map(|i| Request {
            input_ids: ref_ids(&r["generation"][i], 0),
            ..Default::default()
        })
        .collect();
    let reqs = &reqs[..1]; // text only: generation[2] has an image
    let opts = GenerateOptions {
        max_new_tokens: 12,
        stop_ids: Some(vec![]),
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            seed: 42,
        },
        ..Default::default()
    };
    let a = m.generate(reqs, &opts, &mut NoProcessor).unwrap();
    let b = m.generate(reqs, &opts, &mut NoProcessor).unwrap();
    assert_eq!(a.sequences[0].generated_ids, b.sequences[0].generated_ids);
    let mut two = reqs.to_vec();
    two.push(reqs[0].clone());
    let c = m.generate(&two, &opts, &mut NoProcessor).unwrap();
    assert_eq!(c.sequences[0].generated_ids, a.sequences[0].generated_ids);
}

#[test]
fn thought_channels_and_stop_ids_are_hidden_from_text() {
    let m = load_tiny();
    let (open, close) = m
        .channel_ids
        .expect("the tokenizer has <|channel> and <channel|>");
    let hello = m.tokenizer.encode("Hello").unwrap();
    let thought = m.tokenizer.encode("thought hmm").unwrap();
    let mut ids = vec![open];
    ids.extend(&thought);
    ids.push(close);
    ids.extend(&hello);
    ids.push(m.stop_ids[0]);
    assert_eq!(
        m.decode_text(&ids).unwrap(),
        m.tokenizer.decode(&hello, true).unwrap()
    );
}
