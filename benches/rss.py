#!/usr/bin/env python3
"""Peak memory of `quire run`: it follows the pages in flight, not the number of documents nor
the length of one document.

Two measures, each with the tiny model (ocr, budget 70, 4 new tokens) and the release binary:

* `documents N...`: N copies of samples/receipt.jpg (distinct bytes, so no document is a
  duplicate) in a temp folder.
* `pages N...`: one PDF of N pages (a line of text each, written here), the same settings.

`QUIRE_BENCH_BUDGET` sets another budget. Reports the peak resident set size of the largest process (quire or one of its PDF workers,
getrusage of the children), wall time and pages/s. Usage:

    cargo build --release
    python3 benches/rss.py documents 10 1000
    python3 benches/rss.py pages 10 5000
"""
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIRE = os.path.join(ROOT, "target", "release", "quire")


def write_pdf(path: str, pages: int) -> None:
    """A PDF of `pages` Letter pages with one line of text each (Helvetica, no dependencies)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        None,  # the page tree, once the kids are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for i in range(pages):
        text = f"BT /F1 36 Tf 72 680 Td (Page {i + 1} of {pages}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(objects))
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        pages,
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    with open(path, "wb") as f:
        f.write(out)


def measure(inputs: str, out: str) -> tuple[float, float]:
    """Peak RSS (MiB) of the largest process and wall seconds of `quire run` over `inputs`."""
    start = time.monotonic()
    # A fresh Python child per run so ru_maxrss covers only this run.
    code = (
        "import resource,subprocess,sys;"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, QUIRE, "run", inputs, "--out", out,
         "--model", os.path.join(ROOT, "samples", "models", "tiny-gemma4"),
         "--budget", os.environ.get("QUIRE_BENCH_BUDGET", "70"), "--task", "ocr",
         "--max-new-tokens", "4"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    wall = time.monotonic() - start
    if result[1] != "0":
        raise SystemExit(f"quire exited {result[1]} for {inputs}")
    return int(result[0]) / 1024.0, wall


def documents(n: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.makedirs(src)
        base = open(os.path.join(ROOT, "samples", "receipt.jpg"), "rb").read()
        for i in range(n):
            # Bytes after the JPEG end marker make every file distinct without changing pixels.
            with open(os.path.join(src, f"doc{i:05}.jpg"), "wb") as f:
                f.write(base + i.to_bytes(4, "little"))
        rss, wall = measure(src, os.path.join(tmp, "out"))
        return rss, wall, n


def pages(n: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        pdf = os.path.join(tmp, f"long{n}.pdf")
        write_pdf(pdf, n)
        rss, wall = measure(pdf, os.path.join(tmp, "out"))
        return rss, wall, n


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "documents"
    counts = [int(a) for a in sys.argv[2:]] or ([10, 1000] if mode == "documents" else [10, 5000])
    measure_one = {"documents": documents, "pages": pages}[mode]
    print(f"{mode:>10} {'peak RSS MiB':>13} {'wall s':>8} {'pages/s':>8}")
    for n in counts:
        rss, wall, page_count = measure_one(n)
        print(f"{n:>10} {rss:>13.1f} {wall:>8.1f} {page_count / wall:>8.1f}")


if __name__ == "__main__":
    main()
