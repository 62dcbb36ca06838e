"""Writes samples/truth.jsonl, the truth `quire bench --truth` reads, from ground_truth.json.

One JSON object per line: `source` (the path as quire's records name it), `data` (the
extraction `samples/schemas/invoice.schema.json` should give, for the two invoices) and `text`
(what the pages say, for the documents whose text is known). generate.py calls it; it also runs
alone: `python3 samples/truth_jsonl.py`.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def number(s):
    return float(s.replace(",", "")) if s not in (None, "") else None


def invoice_data(fields):
    """The invoice schema's shape of an invoice's ground truth fields."""
    return {
        "invoice_number": fields["invoice_number"],
        "date": fields["invoice_date"],
        "vendor": {"name": fields["vendor"]["name"], "address": fields["vendor"]["address"]},
        "line_items": [
            {
                "description": item["description"],
                "quantity": item["quantity"],
                "unit_price": number(item["unit_price"]),
                "amount": number(item["amount"]),
            }
            for item in fields["line_items"]
        ],
        "subtotal": number(fields["subtotal"]),
        "tax": number(fields.get("tax")),
        "total": number(fields["total"]),
        "currency": fields["currency"],
    }


def text(doc):
    """The document's text, pages separated by a blank line; None when it is not known."""
    if "text_lines" in doc:
        lines = doc["text_lines"]
        pages = lines if lines and isinstance(lines[0], list) else [lines]
        return "\n\n".join("\n".join(page) for page in pages)
    if "visible_lines" in doc:
        return "\n".join(doc["visible_lines"])
    if "page_truth" in doc:
        return "\n\n".join("\n".join([p["title"], *p["lines"]]) for p in doc["page_truth"])
    return None


def convert(truth):
    lines = []
    for doc in truth["documents"]:
        line = {"source": doc["file"]}
        if doc.get("kind") in ("born_digital_pdf", "scanned_pdf") and "invoice_number" in doc.get("fields", {}):
            line["data"] = invoice_data(doc["fields"])
        t = text(doc)
        if t is not None:
            line["text"] = t
        if len(line) > 1:
            lines.append(json.dumps(line, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def write_truth_jsonl(truth):
    (HERE / "truth.jsonl").write_text(convert(truth))


if __name__ == "__main__":
    write_truth_jsonl(json.loads((HERE / "ground_truth.json").read_text()))
