#!/usr/bin/env python3
"""Peak memory of `quire run` for N documents: the bounded channels keep it flat.

Makes N copies of samples/receipt.jpg (distinct bytes, so no document is a duplicate) in a temp
folder, runs the release binary over them with the tiny model (ocr, budget 70, 4 new tokens),
and reports the peak resident set size of quire and its worker processes (getrusage of the
children; the largest single process). Usage:

    cargo build --release
    python3 benches/rss.py 10 1000
"""
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIRE = os.path.join(ROOT, "target", "release", "quire")


def run(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.makedirs(src)
        base = open(os.path.join(ROOT, "samples", "receipt.jpg"), "rb").read()
        for i in range(n):
            # Bytes after the JPEG end marker make every file distinct without changing pixels.
            with open(os.path.join(src, f"doc{i:05}.jpg"), "wb") as f:
                f.write(base + i.to_bytes(4, "little"))
        start = time.monotonic()
        # A fresh Python child per run so ru_maxrss covers only this run.
        code = (
            "import resource,subprocess,sys;"
            "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, QUIRE, "run", src, "--out", os.path.join(tmp, "out"),
             "--model", os.path.join(ROOT, "samples", "models", "tiny-gemma4"),
             "--budget", "70", "--task", "ocr", "--max-new-tokens", "4"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        wall = time.monotonic() - start
        if out[1] != "0":
            raise SystemExit(f"quire exited {out[1]} for {n} documents")
        return int(out[0]) / 1024.0, wall


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [10, 1000]
    print(f"{'documents':>10} {'peak RSS MiB':>13} {'wall s':>8}")
    for n in counts:
        rss, wall = run(n)
        print(f"{n:>10} {rss:>13.1f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
