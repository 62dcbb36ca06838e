#!/usr/bin/env python3
"""Generates quire's sample documents and their ground truth (samples/ground_truth.json).

Deterministic where the tools allow (reportlab invariant mode, fixed random seeds); the
encrypted PDF gets a random file key from pypdf each run. The outputs are committed: tests
never run this script.

    python3 -m venv samples/.venv && samples/.venv/bin/pip install -r samples/requirements.txt
    samples/.venv/bin/python samples/generate.py
"""

import io
import json
import random
import re
import zlib
from decimal import Decimal
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from truth_jsonl import write_truth_jsonl

HERE = Path(__file__).resolve().parent
MALFORMED = HERE / "malformed"
PASSWORD = "quire-sample"

VENDOR = {
    "name": "Northwind Office Supply GmbH",
    "address": "Hafenstrasse 12, 20457 Hamburg, Germany",
    "vat_id": "DE123456789",
}
CUSTOMER = {"name": "Contoso Analytics Ltd", "address": "4 King Street, Leeds LS1 2HL, UK"}


def money(d):
    return f"{d:.2f}"


def invoice_items():
    rng = random.Random(1234)
    products = [
        "A4 copy paper, 500 sheets", "Ballpoint pens, blue, box of 50", "Stapler, heavy duty",
        "Staples 24/6, box of 5000", "Lever arch file, black", "Sticky notes 76x76, 12 pads",
        "Whiteboard markers, 4 colours", "Desk organiser, mesh", "Envelopes C4, 250",
        "Printer toner TN-2420", "Laminating pouches A4, 100", "Paper clips 32 mm, 1000",
        "Highlighters, 6 colours", "Binder clips 19 mm, 12", "Notebook A5 ruled",
        "Label printer tape 12 mm", "Document wallet, red", "Hole punch, 2 holes",
        "Scissors 21 cm", "Correction tape 5 mm", "Archive box, 80 mm", "USB-C hub, 7 ports",
        "Monitor stand, oak", "Cable ties, 100", "Desk lamp LED", "Calculator, 12 digits",
        "Glue stick 40 g", "Rubber bands, 500 g",
    ]
    items = []
    for i, desc in enumerate(products, start=1):
        qty = rng.randint(1, 12)
        unit = Decimal(rng.randint(120, 8900)) / 100
        items.append({
            "line": i, "sku": f"NW-{1000 + i * 7}", "description": desc, "quantity": qty,
            "unit_price": money(unit), "amount": money(unit * qty),
        })
    return items


def born_digital_invoice(path):
    """Three A4 pages: header and items, more items and totals, terms."""
    items = invoice_items()
    subtotal = sum(Decimal(i["amount"]) for i in items)
    tax = (subtotal * Decimal("0.19")).quantize(Decimal("0.01"))
    total = subtotal + tax
    truth = {
        "file": path.name,
        "kind": "born_digital_pdf",
        "pages": 3,
        "page_size_points": [595.2756, 841.8898],
        "fields": {
            "invoice_number": "INV-2026-0042",
            "invoice_date": "2026-03-14",
            "due_date": "2026-04-13",
            "purchase_order": "PO-77812",
            "currency": "EUR",
            "vendor": VENDOR,
            "customer": CUSTOMER,
            "line_items": items,
            "subtotal": money(subtotal),
            "tax_rate": "19%",
            "tax": money(tax),
            "total": money(total),
        },
        "text_lines": [[], [], []],
    }
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    c.setTitle("Invoice INV-2026-0042")
    c.setAuthor("quire samples")
    w, h = A4

    def line(page, x, y, text, font="Helvetica", size=10):
        c.setFont(font, size)
        c.drawString(x, y, text)
        truth["text_lines"][page].append(text)

    def rline(page, x, y, text, font="Helvetica", size=10):
        c.setFont(font, size)
        c.drawRightString(x, y, text)
        truth["text_lines"][page].append(text)

    # Page 1
    line(0, 50, h - 60, VENDOR["name"], "Helvetica-Bold", 16)
    line(0, 50, h - 78, VENDOR["address"])
    line(0, 50, h - 92, f"VAT ID: {VENDOR['vat_id']}")
    line(0, 380, h - 60, "INVOICE", "Helvetica-Bold", 20)
    line(0, 380, h - 84, "Invoice number: INV-2026-0042")
    line(0, 380, h - 98, "Invoice date: 2026-03-14")
    line(0, 380, h - 112, "Due date: 2026-04-13")
    line(0, 380, h - 126, "Purchase order: PO-77812")
    line(0, 50, h - 150, "Bill to:", "Helvetica-Bold")
    line(0, 50, h - 164, CUSTOMER["name"])
    line(0, 50, h - 178, CUSTOMER["address"])

    def header(page, y):
        c.setFont("Helvetica-Bold", 10)
        for x, t in [(50, "#"), (75, "SKU"), (135, "Description")]:
            line(page, x, y, t, "Helvetica-Bold")
        for x, t in [(420, "Qty"), (480, "Unit EUR"), (545, "Amount EUR")]:
            rline(page, x, y, t, "Helvetica-Bold")
        c.line(50, y - 4, 545, y - 4)

    def item_row(page, y, it):
        line(page, 50, y, str(it["line"]))
        line(page, 75, y, it["sku"])
        line(page, 135, y, it["description"])
        rline(page, 420, y, str(it["quantity"]))
        rline(page, 480, y, it["unit_price"])
        rline(page, 545, y, it["amount"])

    y = h - 215
    header(0, y)
    for it in items[:20]:
        y -= 18
        item_row(0, y, it)
    line(0, 50, 40, "Page 1 of 3", size=8)
    c.showPage()
    # Page 2
    y = h - 60
    header(1, y)
    for it in items[20:]:
        y -= 18
        item_row(1, y, it)
    y -= 40
    for label, value in [("Subtotal", truth["fields"]["subtotal"]),
                         ("VAT 19%", truth["fields"]["tax"]),
                         ("Total EUR", truth["fields"]["total"])]:
        rline(1, 440, y, label, "Helvetica-Bold")
        rline(1, 545, y, value, "Helvetica-Bold")
        y -= 18
    line(1, 50, y - 30, "Payment: bank transfer to IBAN DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX")
    line(1, 50, 40, "Page 2 of 3", size=8)
    c.showPage()
    # Page 3
    line(2, 50, h - 60, "Terms and conditions", "Helvetica-Bold", 14)
    terms = [
        "1. Payment is due within 30 days of the invoice date.",
        "2. Goods remain our property until paid in full.",
        "3. Late payments incur interest of 9 percentage points above the base rate.",
        "4. Claims for damaged goods must be made within 7 days of delivery.",
        "5. Place of jurisdiction is Hamburg.",
    ]
    y = h - 90
    for t in terms:
        line(2, 50, y, t)
        y -= 16
    line(2, 50, 40, "Page 3 of 3", size=8)
    c.showPage()
    c.save()
    return truth


def scanned_invoice(path):
    """One A4 page that is only a (noisy, slightly rotated) grey image: no text layer."""
    fields = {
        "invoice_number": "R-5531", "invoice_date": "2025-11-02", "currency": "USD",
        "vendor": {"name": "Acme Plumbing & Heating", "address": "88 Elm Road, Springfield"},
        "customer": {"name": "Jane Doe"},
        "line_items": [
            {"description": "Call-out fee", "quantity": 1, "unit_price": "65.00", "amount": "65.00"},
            {"description": "Replace kitchen tap", "quantity": 1, "unit_price": "140.00", "amount": "140.00"},
            {"description": "Labour, hours", "quantity": 2, "unit_price": "55.00", "amount": "110.00"},
        ],
        "subtotal": "315.00", "tax": "25.20", "total": "340.20",
    }
    lines = [
        ("Acme Plumbing & Heating", 40), ("88 Elm Road, Springfield", 24), ("", 24),
        ("INVOICE R-5531", 36), ("Date: 2025-11-02", 24), ("Customer: Jane Doe", 24), ("", 24),
        ("Call-out fee            1 x 65.00    65.00", 24),
        ("Replace kitchen tap     1 x 140.00  140.00", 24),
        ("Labour, hours           2 x 55.00   110.00", 24), ("", 24),
        ("Subtotal                           315.00", 24),
        ("Tax 8%                              25.20", 24),
        ("TOTAL USD                          340.20", 30),
    ]
    img = Image.new("L", (827, 1169), 250)  # A4 at 100 dpi
    d = ImageDraw.Draw(img)
    y = 80
    for text, size in lines:
        d.text((70, y), text, fill=20, font=ImageFont.load_default(size))
        y += int(size * 1.6)
    rng = random.Random(7)
    for _ in range(2500):
        x, yy = rng.randrange(827), rng.randrange(1169)
        d.point((x, yy), fill=rng.randrange(120, 220))
    img = img.rotate(0.8, resample=Image.BICUBIC, fillcolor=250).filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=55)
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    c.drawImage(ImageReader(io.BytesIO(buf.getvalue())), 0, 0, width=A4[0], height=A4[1])
    c.showPage()
    c.save()
    return {"file": path.name, "kind": "scanned_pdf", "pages": 1,
            "page_size_points": [595.2756, 841.8898], "text_layer": "",
            "fields": fields, "visible_lines": [t for t, _ in lines if t]}


def landscape_statement(path):
    """One landscape A4 page with a wide table."""
    w, h = landscape(A4)
    rows = [("2026-01-05", "Opening balance", "", "", "1,250.00"),
            ("2026-01-09", "Card payment - Office Depot", "84.20", "", "1,165.80"),
            ("2026-01-15", "Transfer from Contoso Analytics", "", "2,400.00", "3,565.80"),
            ("2026-01-22", "Direct debit - Electricity", "131.75", "", "3,434.05"),
            ("2026-01-31", "Closing balance", "", "", "3,434.05")]
    text = ["Account statement January 2026", "Account: 0012 3456 78",
            "Date", "Description", "Debit", "Credit", "Balance"]
    c = canvas.Canvas(str(path), pagesize=(w, h), invariant=1)
    c.setFont("Helvetica-Bold", 18)
    c.drawString(50, h - 60, text[0])
    c.setFont("Helvetica", 11)
    c.drawString(50, h - 80, text[1])
    cols = [50, 150, 520, 620, 760]
    y = h - 120
    c.setFont("Helvetica-Bold", 11)
    for x, t in zip(cols, text[2:]):
        c.drawString(x, y, t)
    c.setFont("Helvetica", 11)
    for row in rows:
        y -= 20
        for x, t in zip(cols, row):
            if t:
                c.drawString(x, y, t)
                text.append(t)
    c.showPage()
    c.save()
    return {"file": path.name, "kind": "landscape_pdf", "pages": 1,
            "page_size_points": [841.8898, 595.2756],
            "fields": {"account": "0012 3456 78", "period": "2026-01",
                       "opening_balance": "1,250.00", "closing_balance": "3,434.05",
                       "transactions": [dict(zip(["date", "description", "debit", "credit", "balance"], r)) for r in rows[1:4]]},
            "text_lines": text}


def multipage_tiff(path):
    """Three fax-like greyscale pages of different sizes, deflate-compressed."""
    pages_truth, frames = [], []
    specs = [((850, 1100), "DELIVERY NOTE DN-9001", ["Ship to: Contoso Analytics Ltd", "Parcels: 3", "Weight: 12.5 kg"]),
             ((850, 1100), "DELIVERY NOTE DN-9001 (2/3)", ["Item: A4 copy paper x 10", "Item: Toner TN-2420 x 2"]),
             ((1100, 850), "SIGNATURE PAGE (3/3)", ["Received by: J. Smith", "Date: 2026-03-20"])]
    for (w, h), title, lines in specs:
        img = Image.new("L", (w, h), 255)
        d = ImageDraw.Draw(img)
        d.text((60, 60), title, fill=0, font=ImageFont.load_default(36))
        y = 140
        for t in lines:
            d.text((60, y), t, fill=0, font=ImageFont.load_default(26))
            y += 44
        d.rectangle((40, 40, w - 40, h - 40), outline=0, width=3)
        frames.append(img)
        pages_truth.append({"size_px": [w, h], "title": title, "lines": lines})
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_deflate")
    return {"file": path.name, "kind": "multipage_tiff", "pages": 3,
            "fields": {"delivery_note": "DN-9001", "ship_to": "Contoso Analytics Ltd",
                       "received_by": "J. Smith", "received_date": "2026-03-20"},
            "page_truth": pages_truth}


def small_images():
    """A square PNG with alpha, an extreme strip PNG, a JPEG, a WebP."""
    sq = Image.new("RGBA", (300, 300), (255, 255, 255, 0))
    d = ImageDraw.Draw(sq)
    d.ellipse((20, 20, 280, 280), fill=(30, 90, 200, 255))
    d.text((90, 130), "RECEIPT", fill=(255, 255, 255, 255), font=ImageFont.load_default(28))
    sq.save(HERE / "square.png", optimize=True)
    strip = Image.new("RGB", (2400, 30), (255, 255, 255))
    ImageDraw.Draw(strip).text((10, 4), "MICR 000123456 ::0042:: 987654321 " * 4, fill=(0, 0, 0),
                               font=ImageFont.load_default(18))
    strip.save(HERE / "strip.png", optimize=True)
    photo = Image.new("RGB", (640, 480), (200, 190, 170))
    ImageDraw.Draw(photo).text((40, 200), "Receipt photo 12.99", fill=(20, 20, 20),
                               font=ImageFont.load_default(40))
    photo.save(HERE / "receipt.jpg", quality=70)
    photo.save(HERE / "receipt.webp", quality=60)


def malformed(invoice_bytes):
    M = MALFORMED
    M.mkdir(exist_ok=True)
    (M / "empty.pdf").write_bytes(b"")
    (M / "truncated.pdf").write_bytes(invoice_bytes[: len(invoice_bytes) // 3])
    rng = random.Random(99)
    (M / "garbage.pdf").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    # The xref table removed (trailer kept, startxref now wrong): PDFium rebuilds it silently.
    start = invoice_bytes.rfind(b"\nxref") + 1
    end = invoice_bytes.rfind(b"trailer")
    (M / "no_xref.pdf").write_bytes(invoice_bytes[:start] + invoice_bytes[end:])
    # Everything after the last object cut (no xref, no trailer, no startxref): unreadable.
    (M / "no_trailer.pdf").write_bytes(invoice_bytes[:start])
    # A single-page PDF whose content stream claims FlateDecode but holds garbage.
    (M / "bad_stream.pdf").write_bytes(pdf_with_bad_stream())
    # Parses fine, has no pages.
    (M / "zero_pages.pdf").write_bytes(pdf_with_zero_pages())
    # AES-256 encrypted copy of the landscape sample; password in samples/README.md.
    w = PdfWriter(clone_from=PdfReader(HERE / "landscape.pdf"))
    w.encrypt(user_password=PASSWORD, owner_password=PASSWORD + "-owner", algorithm="AES-256")
    with open(M / "encrypted.pdf", "wb") as f:
        w.write(f)
    # A PNG that claims 60000x60000 pixels: must be refused by the decoder limits.
    (M / "bomb.png").write_bytes(png_bomb(60000, 60000))
    # Text that is named like an image.
    (M / "not_an_image.jpg").write_bytes(b"this is not a JPEG\n")


def build_pdf(objects, root=1):
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdf_with_bad_stream():
    junk = bytes(random.Random(5).randrange(256) for _ in range(300))
    return build_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        f"<< /Length {len(junk)} /Filter /FlateDecode >>\nstream\n".encode() + junk + b"\nendstream",
    ])


def pdf_with_zero_pages():
    return build_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [] /Count 0 >>",
    ])


def png_bomb(w, h):
    import struct

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def mixed_50_pages(path):
    """50 A4 pages for the render benchmark: text pages, table pages and scanned-style image
    pages (one shared image, so the file stays small)."""
    rng = random.Random(50)
    items = invoice_items()
    scan = Image.new("L", (827, 1169), 245)
    d = ImageDraw.Draw(scan)
    for i in range(40):
        d.text((60, 60 + i * 26), f"Scanned line {i:02d}: " + "lorem ipsum dolor sit amet " * 2,
               fill=30, font=ImageFont.load_default(16))
    buf = io.BytesIO()
    scan.save(buf, "JPEG", quality=50)
    scan_reader = ImageReader(io.BytesIO(buf.getvalue()))
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    w, h = A4
    for page in range(50):
        kind = page % 3
        if kind == 0:
            c.setFont("Helvetica-Bold", 14)
            c.drawString(50, h - 60, f"Report page {page + 1}")
            c.setFont("Helvetica", 9)
            for i in range(60):
                words = " ".join(rng.choice(["invoice", "total", "amount", "vendor", "net", "tax",
                                             "order", "delivery", "payment", "due"]) for _ in range(14))
                c.drawString(50, h - 90 - i * 12, words)
        elif kind == 1:
            c.setFont("Helvetica-Bold", 12)
            c.drawString(50, h - 60, f"Line items, page {page + 1}")
            c.setFont("Helvetica", 10)
            for i, it in enumerate(items):
                y = h - 90 - i * 18
                c.drawString(50, y, it["sku"])
                c.drawString(120, y, it["description"])
                c.drawRightString(545, y, it["amount"])
                c.line(50, y - 4, 545, y - 4)
        else:
            c.drawImage(scan_reader, 0, 0, width=w, height=h)
        c.showPage()
    c.save()


def main():
    truth = {"documents": []}
    truth["documents"].append(born_digital_invoice(HERE / "invoice.pdf"))
    truth["documents"].append(scanned_invoice(HERE / "scanned.pdf"))
    truth["documents"].append(landscape_statement(HERE / "landscape.pdf"))
    truth["documents"].append(multipage_tiff(HERE / "delivery.tiff"))
    small_images()
    mixed_50_pages(HERE / "mixed50.pdf")
    truth["documents"] += [
        {"file": "square.png", "kind": "image", "size_px": [300, 300], "note": "RGBA; transparent corners composite onto white"},
        {"file": "strip.png", "kind": "image", "size_px": [2400, 30], "note": "extreme aspect ratio (80:1)"},
        {"file": "receipt.jpg", "kind": "image", "size_px": [640, 480], "fields": {"total": "12.99"}},
        {"file": "mixed50.pdf", "kind": "benchmark_pdf", "pages": 50, "note": "text, table and scanned-image pages for benches/render.rs"},
        {"file": "receipt.webp", "kind": "image", "size_px": [640, 480], "fields": {"total": "12.99"}},
    ]
    malformed((HERE / "invoice.pdf").read_bytes())
    truth["malformed"] = {
        "empty.pdf": "0 bytes: error empty_file",
        "truncated.pdf": "first third of invoice.pdf: PDFium repairs what it can (see tests/render_malformed.rs)",
        "garbage.pdf": "4096 random bytes named .pdf: error pdf_corrupt",
        "no_xref.pdf": "invoice.pdf without its xref table (startxref now wrong): PDFium rebuilds it silently, renders 3 pages",
        "no_trailer.pdf": "invoice.pdf cut before its xref table (no xref, trailer or startxref): error pdf_corrupt",
        "bad_stream.pdf": "content stream of garbage bytes: renders a blank page, no error",
        "zero_pages.pdf": "valid PDF with /Count 0: error pdf_no_pages",
        "encrypted.pdf": f"AES-256, user password {PASSWORD!r}: pdf_encrypted without it, pdf_wrong_password with a wrong one",
        "bomb.png": "PNG header claiming 60000x60000: error image_too_large",
        "not_an_image.jpg": "text named .jpg: error unsupported_format",
    }
    truth["password"] = PASSWORD
    (HERE / "ground_truth.json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    write_truth_jsonl(truth)


if __name__ == "__main__":
    main()
