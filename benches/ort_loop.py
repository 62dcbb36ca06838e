#!/usr/bin/env python3
"""quire against a plain Python onnxruntime loop, side by side, on the same model files and inputs.

The loop is written from the export contract (docs: gemma4-onnx-contract): the vision encoder on
transformers' preprocessing (PIL backend, which quire matches bit for bit; done once by the
driver and handed over as .npz, so the loop imports only numpy and onnxruntime), embed_tokens, the
image features scattered into the image positions, then the decoder with its KV cache, greedy,
`num_logits_to_keep = 1`. Its sessions use onnxruntime's defaults (arena on, one intra-op thread
per physical core), as a plain script would.

For every budget, the two alternate run by run (a warm-up of each first). quire is
`quire generate --json` (release build); its prompt ids are the loop's input, so both see the
same tokens, and the greedy tokens of both are compared (a mismatch is an error). Reported:
medians of vision ms, prefill tokens/s, decode ms/step, wall and minor page faults of each
process, and quire's time outside ONNX Runtime (wall minus load, vision, prefill and decode).

With `--pages N`, also end to end: `quire run` over a folder of N copies of the image against the
loop over N pages one after another, every page generating exactly `--new-tokens` tokens in both
(see `end_to_end`).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r onnx/export/requirements.txt
    cargo build --release
    /tmp/venv/bin/python benches/ort_loop.py --model DIR [--image PNG] [--budgets 70,280]
        [--new-tokens 32] [--runs 3] [--pages 8] [--text-dtype q4]

With `--loop` the script is the loop itself (one run, JSON on stdout); the driver calls it so
that each process is measured alone.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIRE = ROOT / "target" / "release" / "quire"
PROMPT = "Describe this image."


def load_sessions(model: str, text_dtype: str = "fp32"):
    import onnxruntime as ort

    d = Path(model)
    suffix = "" if text_dtype == "fp32" else f"_{text_dtype}"
    so = ort.SessionOptions()
    so.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    return {
        "config": json.loads((d / "config.json").read_text()),
        "vision": ort.InferenceSession(str(d / "onnx" / "vision_encoder.onnx"), so, providers=cpu),
        "embed": ort.InferenceSession(str(d / "onnx" / f"embed_tokens{suffix}.onnx"), so, providers=cpu),
        "decoder": ort.InferenceSession(str(d / "onnx" / f"decoder_model_merged{suffix}.onnx"), so, providers=cpu),
    }


def generate(m: dict, pixel_values, positions, input_ids: list[int], new_tokens: int) -> dict:
    """One page: vision, prompt embedding with the image features scattered in, greedy decoding of
    `new_tokens` tokens (EOS ignored)."""
    import numpy as np

    vision, embed, decoder = m["vision"], m["embed"], m["decoder"]
    t = time.perf_counter()
    features = vision.run(["image_features"], {"pixel_values": pixel_values, "pixel_position_ids": positions})[0]
    vision_s = time.perf_counter() - t

    ids = np.array([input_ids], dtype=np.int64)
    t = time.perf_counter()
    emb, pli = embed.run(None, {"input_ids": ids})
    mask = ids == m["config"]["image_token_id"]
    if mask.sum() != features.shape[0]:
        raise SystemExit(f"{mask.sum()} image tokens in the prompt, {features.shape[0]} features")
    emb[mask] = features.astype(emb.dtype)
    past = {
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float16 if "16" in i.type else np.float32)
        for i in decoder.get_inputs()
        if i.name.startswith("past_key_values.")
    }
    out_names = [o.name for o in decoder.get_outputs()]
    am = np.ones_like(ids)
    pos = np.arange(ids.shape[1], dtype=np.int64)[None]
    tokens, step_s, prefill_s, nxt = [], [], 0.0, 0
    for step in range(new_tokens):
        ts = time.perf_counter()
        if step > 0:  # a step: the last token's embedding, then the decoder
            emb, pli = embed.run(None, {"input_ids": np.array([[nxt]], dtype=np.int64)})
            am = np.concatenate([am, np.ones((1, 1), dtype=np.int64)], axis=1)
            pos = pos[:, -1:] + 1
        feed = {"inputs_embeds": emb, "per_layer_inputs": pli, "attention_mask": am, "position_ids": pos,
                "num_logits_to_keep": np.array(1, dtype=np.int64), **past}
        res = dict(zip(out_names, decoder.run(None, feed)))
        nxt = int(res["logits"][0, -1].argmax())
        if step == 0:
            prefill_s = time.perf_counter() - t  # embed + scatter + first decoder run
        else:
            step_s.append(time.perf_counter() - ts)
        tokens.append(nxt)
        past = {n.replace("present.", "past_key_values."): v for n, v in res.items() if n.startswith("present.")}
    return {
        "vision_s": vision_s,
        "prefill_s": prefill_s,
        "prompt_tokens": int(ids.shape[1]),
        "decode_s_per_token": statistics.fmean(step_s) if step_s else 0.0,
        "generated_ids": tokens,
    }


def run_loop(a) -> dict:
    """`--loop`: one image, or `--pages N` pages one after another; EOS ignored (as quire's
    `--ignore-eos`), so every page generates `--new-tokens` tokens."""
    import numpy as np

    t0 = time.perf_counter()
    m = load_sessions(a.model, a.text_dtype)
    load_s = time.perf_counter() - t0
    inputs = np.load(a.pixels)
    pixel_values, positions = inputs["pixel_values"], inputs["pixel_position_ids"]
    if not a.pages:
        return {"load_s": load_s, **generate(m, pixel_values, positions, a.input_ids, a.new_tokens)}
    pages = [generate(m, pixel_values, positions, a.input_ids, a.new_tokens)["generated_ids"]
             for _ in range(a.pages)]
    return {"load_s": load_s, "pages": pages}


def run_child(cmd: list[str], json_out: bool = True) -> tuple[dict, float, int, float]:
    """Runs `cmd` and reaps it with wait4, so the rusage is this child's alone."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{err.decode(errors='replace')[-2000:]}")
    data = json.loads(out.decode().strip().splitlines()[-1]) if json_out else {}
    if "timings" in data:  # quire generate --json: timings in their own object
        data = {**data, **data["timings"]}
    return data, wall, usage.ru_minflt, usage.ru_maxrss / 1024


def write_pixels(a, budget: int, path: str) -> None:
    """transformers' preprocessing (PIL backend) of the image, for the loop to read: the loop
    process then imports only numpy and onnxruntime, as a deployed script would."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "onnx" / "export"))
    from quire_export import _image_processor

    proc_cfg = json.loads((Path(a.model) / "processor_config.json").read_text())["image_processor"]
    kw = {k: proc_cfg[k] for k in ("patch_size", "pooling_kernel_size") if k in proc_cfg}
    bf = _image_processor()(Image.open(a.image).convert("RGB"), max_soft_tokens=budget, return_tensors="np", **kw)
    np.savez(path, pixel_values=bf["pixel_values"].astype(np.float32),
             pixel_position_ids=bf["image_position_ids"].astype(np.int64))


def quire_cmd(a, budget: int) -> list[str]:
    return [str(QUIRE), "generate", "--model", a.model, "--image", a.image, "--prompt", PROMPT,
            "--budget", str(budget), "--max-new-tokens", str(a.new_tokens), "--greedy", "--json", "--ignore-eos"] + common_flags(a)


def common_flags(a) -> list[str]:
    return (["--threads", str(a.threads)] if a.threads else []) + (
        ["--dtype", f"{a.text_dtype},vision=fp32"] if a.text_dtype != "fp32" else [])


def loop_cmd(a, pixels: str, input_ids: list[int]) -> list[str]:
    return [sys.executable, __file__, "--loop", "--model", a.model, "--pixels", pixels,
            "--new-tokens", str(a.new_tokens), "--input-ids", json.dumps(input_ids), "--text-dtype", a.text_dtype]


def summary(runs: list[tuple[dict, float, int, float]]) -> dict:
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    return {
        "vision_ms": med(lambda r: r[0]["vision_s"] * 1e3),
        "prefill_tok_s": med(lambda r: r[0]["prompt_tokens"] / r[0]["prefill_s"]),
        "decode_ms": med(lambda r: r[0]["decode_s_per_token"] * 1e3),
        "wall_s": med(lambda r: r[1]),
        "faults": med(lambda r: r[2]),
        "rss_mib": med(lambda r: r[3]),
        # Wall time not spent loading or inside the three graphs' runs.
        "outside_ms": med(lambda r: (r[1] - r[0]["load_s"] - r[0]["vision_s"] - r[0]["prefill_s"]
                                     - r[0]["decode_s_per_token"] * (len(r[0]["generated_ids"]) - 1)) * 1e3),
    }


def drive(a, tmp: str) -> None:
    print(f"model {a.model} (text {a.text_dtype}), image {a.image}, {a.new_tokens} new tokens, {a.runs} alternating runs "
          f"after a warm-up, medians")
    print("| budget | program | vision ms | prefill tok/s | decode ms/step | wall s | minor faults | peak RSS MiB "
          "| outside the graphs ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for budget in a.budgets:
        first = run_child(quire_cmd(a, budget))[0]
        ids = first["input_ids"]
        pixels = os.path.join(tmp, f"pixels_{budget}.npz")
        # In a child: a big parent would count in the children's peak RSS (Linux keeps the
        # pre-exec peak of a forked process).
        subprocess.run([sys.executable, __file__, "--write-pixels", pixels, "--model", a.model,
                        "--image", a.image, "--budgets", str(budget)], check=True)
        run_child(loop_cmd(a, pixels, ids))  # warm-up
        quire, loop = [], []
        for _ in range(a.runs):
            quire.append(run_child(quire_cmd(a, budget)))
            loop.append(run_child(loop_cmd(a, pixels, ids)))
        for q, l in zip(quire, loop):
            if q[0]["generated_ids"] != l[0]["generated_ids"]:
                raise SystemExit(f"budget {budget}: greedy tokens differ\n quire {q[0]['generated_ids']}\n"
                                 f" loop  {l[0]['generated_ids']}")
        for name, runs in (("quire", quire), ("python loop", loop)):
            s = summary(runs)
            print(f"| {budget} | {name} | {s['vision_ms']:.1f} | {s['prefill_tok_s']:.0f} | {s['decode_ms']:.2f} "
                  f"| {s['wall_s']:.2f} | {s['faults']:.0f} | {s['rss_mib']:.0f} | {s['outside_ms']:.0f} |")
    print("greedy tokens identical in every run")
    if a.pages:
        end_to_end(a, tmp)


def end_to_end(a, tmp: str) -> None:
    """`quire run` over a folder of `--pages` page images against the loop over the same pages one
    after another (its preprocessing done beforehand, once: in its favour). Same prompt; EOS
    ignored by both, so both do the same work: `--new-tokens` tokens per page (a random model's
    stop token says nothing of a real page's length). The loop's tokens are checked against
    `quire generate`'s; quire run's texts are compared with it."""
    budget = a.budgets[0]
    pixels = os.path.join(tmp, f"pixels_{budget}.npz")
    gen = run_child(quire_cmd(a, budget))[0]
    folder = os.path.join(tmp, "pages")
    os.makedirs(folder, exist_ok=True)
    image = Path(a.image).read_bytes()
    for i in range(a.pages):
        # Bytes after the image's end make each file distinct (no duplicate skipped), same pixels.
        Path(folder, f"page{i:04}{Path(a.image).suffix}").write_bytes(image + i.to_bytes(4, "little"))
    run_cmd = [str(QUIRE), "run", folder, "--model", a.model, "--budget", str(budget), "--task", "prompt",
               "--prompt", PROMPT, "--max-new-tokens", str(a.new_tokens), "--ignore-eos"] + common_flags(a) + (
                   ["--batch-size", str(a.batch_size)] if a.batch_size else [])
    loop = loop_cmd(a, pixels, gen["input_ids"]) + ["--pages", str(a.pages)]
    quire_runs, loop_runs, quire_tokens, loop_tokens, differ = [], [], [], [], []
    marker = "<!-- page 1 -->"
    for r in range(a.runs):
        out = os.path.join(tmp, f"out{r}")
        quire_runs.append(run_child(run_cmd + ["--out", out], json_out=False))
        records = [json.loads(line) for line in Path(out, "results.jsonl").read_text().splitlines()]
        if len(records) != a.pages:
            raise SystemExit(f"quire run: {len(records)} results for {a.pages} pages")
        # Batched decode steps (pages decoding together) may round differently from one page
        # alone; on a model with near-tied logits that can change greedy tokens, so differences
        # from quire generate are counted and reported.
        differ.append(sum(rec["text"].removeprefix(marker).lstrip("\n") != gen["text"] for rec in records))
        quire_tokens.append(sum(rec["tokens"]["generated"] for rec in records))
        if quire_tokens[-1] != a.pages * a.new_tokens:
            raise SystemExit(f"quire run generated {quire_tokens[-1]} tokens, not {a.pages} x {a.new_tokens}")
        loop_runs.append(run_child(loop))
        if any(p != gen["generated_ids"] for p in loop_runs[-1][0]["pages"]):
            raise SystemExit("the loop's tokens differ from quire generate's")
        loop_tokens.append(sum(len(p) for p in loop_runs[-1][0]["pages"]))
    q = statistics.median(r[1] for r in quire_runs)
    l = statistics.median(r[1] for r in loop_runs)
    print(f"\nend to end: {a.pages} pages at budget {budget}, {a.new_tokens} new tokens each, "
          f"{a.runs} alternating runs, medians (wall includes loading)")
    print("| program | wall s | pages/s | generated tokens | tokens/s | minor faults | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, runs, wall, tokens in (("quire run", quire_runs, q, quire_tokens), ("python loop", loop_runs, l, loop_tokens)):
        t = statistics.median(tokens)
        print(f"| {name} | {wall:.2f} | {a.pages / wall:.3f} | {t:.0f} | {t / wall:.2f} "
              f"| {statistics.median(r[2] for r in runs):.0f} | {statistics.median(r[3] for r in runs):.0f} |")
    print(f"quire / loop pages/s: {l / q:.2f}x; the loop's pages identical to quire generate's; quire run's pages "
          f"differing from quire generate's, per run: {differ}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "samples" / "models" / "tiny-gemma4"))
    ap.add_argument("--image", default=str(ROOT / "samples" / "models" / "tiny-gemma4" / "images" / "grad_640x480.png"))
    ap.add_argument("--budgets", default="70,280")
    ap.add_argument("--pixels", help="(--loop) the preprocessed image, .npz")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pages", type=int, default=0,
                    help="also run end to end over this many pages (first budget); with --loop: be that loop")
    ap.add_argument("--threads", type=int, default=0, help="quire --threads (0: its default)")
    ap.add_argument("--batch-size", type=int, default=0, help="quire run --batch-size (0: its default)")
    ap.add_argument("--text-dtype", default="fp32",
                    help="embed_tokens and decoder variant (q4: the _q4 graphs; vision stays fp32)")
    ap.add_argument("--loop", action="store_true", help="be the loop: one run, JSON on stdout")
    ap.add_argument("--input-ids")
    ap.add_argument("--write-pixels", metavar="NPZ", help="preprocess the image at --budgets into NPZ")
    a = ap.parse_args()
    if a.loop:
        a.input_ids = json.loads(a.input_ids)
        print(json.dumps(run_loop(a)))
    elif a.write_pixels:
        write_pixels(a, int(a.budgets), a.write_pixels)
    else:
        a.budgets = [int(b) for b in a.budgets.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            drive(a, tmp)


if __name__ == "__main__":
    main()
