#!/usr/bin/env python3
"""Does a compact graph run the same kernels as the ordinary one? onnxruntime's per-node profile
of both, side by side: the same decoder steps on the same inputs, alternating, then per op type
the kernel count and total time of each (medians over runs), and the set of (node, op) pairs.

    python3 onnx/export/quire_export.py e2b /tmp/e2b
    python3 -c "import sys; sys.path.insert(0, 'onnx/export'); import quire_export as q; from pathlib import Path; \
        q.materialize(Path('/tmp/e2b/onnx/decoder_model_merged_q4.onnx'), Path('/tmp/e2b/onnx/ordinary_q4.onnx'))"
    python3 benches/same_kernels.py /tmp/e2b/onnx/decoder_model_merged_q4.onnx /tmp/e2b/onnx/ordinary_q4.onnx
"""
import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def feeds(sess, prompt: int, rng):
    """A prompt of `prompt` random embeddings: the decoder's prefill inputs."""
    f = {}
    for i in sess.get_inputs():
        if i.name == "inputs_embeds":
            f[i.name] = rng.standard_normal((1, prompt, i.shape[2])).astype(np.float32)
        elif i.name == "per_layer_inputs":
            f[i.name] = rng.standard_normal((1, prompt, i.shape[2], i.shape[3])).astype(np.float32)
        elif i.name == "attention_mask":
            f[i.name] = np.ones((1, prompt), np.int64)
        elif i.name == "position_ids":
            f[i.name] = np.arange(prompt, dtype=np.int64)[None]
        elif i.name == "num_logits_to_keep":
            f[i.name] = np.array(1, np.int64)
        else:
            f[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
    return f


def profile(path: str, prompt: int, steps: int) -> tuple[dict, set, np.ndarray]:
    """Per op type [kernel runs, total µs]; the (node, op) pairs that ran; the last logits."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "p")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    f = feeds(sess, prompt, rng)
    names = [o.name for o in sess.get_outputs()]
    for _ in range(steps):  # prefill, then single-token steps on the growing cache
        out = dict(zip(names, sess.run(None, f)))
        f["inputs_embeds"] = rng.standard_normal((1, 1, f["inputs_embeds"].shape[2])).astype(np.float32)
        f["per_layer_inputs"] = rng.standard_normal((1, 1, *f["per_layer_inputs"].shape[2:])).astype(np.float32)
        f["attention_mask"] = np.ones((1, f["attention_mask"].shape[1] + 1), np.int64)
        f["position_ids"] = f["position_ids"][:, -1:] + 1
        f.update({n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")})
    events = json.loads(Path(sess.end_profiling()).read_text())
    by_op, pairs = defaultdict(lambda: [0, 0.0]), set()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            by_op[op][0] += 1
            by_op[op][1] += e["dur"]
            pairs.add((e["name"][: -len("_kernel_time")], op))
    return dict(by_op), pairs, out["logits"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("compact")
    ap.add_argument("ordinary")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    runs = {"compact": [], "ordinary": []}
    for _ in range(a.runs):
        for name in runs:
            runs[name].append(profile(getattr(a, name), a.prompt, a.steps))
    (c_ops, c_pairs, c_logits), (o_ops, o_pairs, o_logits) = runs["compact"][0], runs["ordinary"][0]
    print(f"{a.prompt}-token prefill + {a.steps - 1} steps, {a.runs} alternating runs, median kernel ms")
    print("| op | kernels | compact ms | ordinary ms | ratio |")
    print("|---|---|---|---|---|")
    ops = sorted(set(c_ops) | set(o_ops), key=lambda op: -o_ops.get(op, [0, 0])[1])
    for op in ops:
        c = statistics.median(r[0].get(op, [0, 0])[1] for r in runs["compact"]) / 1e3
        o = statistics.median(r[0].get(op, [0, 0])[1] for r in runs["ordinary"]) / 1e3
        n = f"{c_ops.get(op, [0])[0]}" if c_ops.get(op, [0])[0] == o_ops.get(op, [0])[0] else \
            f"{c_ops.get(op, [0])[0]} vs {o_ops.get(op, [0])[0]}"
        print(f"| {op} | {n} | {c:.1f} | {o:.1f} | {c / o if o else float('nan'):.2f} |")
    ct = statistics.median(sum(v[1] for v in r[0].values()) for r in runs["compact"]) / 1e3
    ot = statistics.median(sum(v[1] for v in r[0].values()) for r in runs["ordinary"]) / 1e3
    print(f"| all | | {ct:.1f} | {ot:.1f} | {ct / ot:.2f} |")
    same = c_pairs == o_pairs
    print(f"same (node, op) pairs: {same} ({len(c_pairs)} vs {len(o_pairs)}); logits equal: "
          f"{np.array_equal(c_logits, o_logits)}")
    if not same or not np.array_equal(c_logits, o_logits):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
