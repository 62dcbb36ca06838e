//! `quire generate`: one image (or none) and a prompt through Gemma 4: a quick check of a model
//! directory. Everything model-specific (ids, template, sizes) comes from the directory.

use super::output::outln;
use anyhow::Context;
use quire_onnx::gemma4::{
    Gemma4, GenerateOptions, LoadOptions, Message, NoProcessor, Request, Rgb8, Sampling,
};
use quire_pipeline::settings::{self, GenerateArgs};
use std::time::Instant;

pub fn run(global: &super::Global, args: GenerateArgs) -> anyhow::Result<u8> {
    let args = settings::resolve_generate(args.settings)?;
    let provisioner = global.provisioner();
    let runtime = quire_onnx::runtime::environment_for(&provisioner, args.eps.clone())
        .context("loading ONNX Runtime")?;
    tracing::info!("ONNX Runtime from {}", runtime.located.library.display());
    let (env, eps) = (runtime.env, runtime.eps);

    let t_load = Instant::now();
    let opts = LoadOptions {
        dtype: args.dtype,
        eps,
        text_only: args.images.is_empty(),
        session: args.session,
    };
    let mut model = Gemma4::load(env, &args.model, &opts)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();

    let t_pre = Instant::now();
    let mut images = Vec::new();
    for path in &args.images {
        let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?;
        let rgb = Rgb8::from_image(&img);
        images.push(
            model
                .preprocess(&rgb, Some(args.budget))
                .with_context(|| format!("preprocessing {}", path.display()))?,
        );
    }
    let preprocess_s = t_pre.elapsed().as_secs_f64();
    let refs: Vec<_> = images.iter().collect();
    let messages = [Message::user_with_images(images.len(), &args.prompt)];
    let input_ids = model.prompt_ids(&messages, &refs, args.thinking)?;

    let g = &model.generation;
    let sampling = match args.seed {
        Some(seed) if !args.greedy => Sampling::Sample {
            temperature: args.temperature.or(g.temperature).unwrap_or(1.0),
            top_k: args.top_k.or(g.top_k).unwrap_or(0),
            top_p: args.top_p.or(g.top_p).unwrap_or(1.0),
            seed,
        },
        _ => Sampling::Greedy,
    };
    let gen_opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_ids: args.ignore_eos.then(Vec::new),
        keep_prefill_logits: false,
    };
    let request = Request {
        input_ids: input_ids.clone(),
        images: refs.clone(),
        image_features: None,
    };
    let out = model.generate(&[request], &gen_opts, &mut NoProcessor)?;
    let seq = &out.sequences[0];
    let text = model.decode_text(&seq.generated_ids)?;
    let t = &out.timings;
    let providers: serde_json::Map<String, serde_json::Value> = model
        .providers()
        .into_iter()
        .map(|(graph, rep)| (graph, serde_json::Value::String(rep.to_string())))
        .collect();

    if args.json {
        let obj = serde_json::json!({
            "model": args.model,
            "dtype": args.dtype.to_string(),
            "input_ids": input_ids,
            "generated_ids": seq.generated_ids,
            "text": text,
            "finish_reason": seq.finish_reason,
            "num_soft_tokens": images.iter().map(|i| i.num_soft_tokens).collect::<Vec<_>>(),
            "providers": providers,
            "timings": {
                "load_s": load_s,
                "preprocess_s": preprocess_s,
                "vision_s": t.vision_s,
                "prefill_s": t.prefill_s,
                "prompt_tokens": t.prompt_tokens,
                "decode_steps": t.decode_step_s.len(),
                "decode_s_per_token": t.decode_mean_s(),
                "decode_step_s": t.decode_step_s,
            },
        });
        outln!("{}", serde_json::to_string(&obj)?)?;
    } else {
        outln!("{text}")?;
        eprintln!("---");
        for (graph, rep) in &providers {
            eprintln!("{graph}: {}", rep.as_str().unwrap_or_default());
        }
        eprintln!(
            "load {:.1} ms | preprocess {:.1} ms | vision {:.1} ms | prefill {:.1} ms ({} tokens) | decode {:.2} ms/token ({} steps) | {:?}",
            load_s * 1e3,
            preprocess_s * 1e3,
            t.vision_s * 1e3,
            t.prefill_s * 1e3,
            t.prompt_tokens,
            t.decode_mean_s() * 1e3,
            t.decode_step_s.len(),
            seq.finish_reason,
        );
    }
    Ok(crate::exit::OK)
}
