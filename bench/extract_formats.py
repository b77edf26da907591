#!/usr/bin/env python
"""PDF and Word text extraction: ragops' readers against the candidate libraries.

The inputs are written by real writers in this script (fpdf2 for PDF, python-docx for Word):

- ``fidelity.pdf`` / ``fidelity.docx``: a title, section headings, a 3x3 table, three
  paragraphs whose order is known, and Windows-1252 punctuation and accents (``café – naïve €``);
- ``big.pdf``: 500 pages (a heading and ~2,600 characters of prose per page);
- ``big.docx``: 500 sections (a heading, three paragraphs, a table every tenth section).

Each (candidate, file) runs in its own subprocess (three times when it takes under 20 s: the
median time and the largest peak are kept), so that the peak resident memory (VmHWM)
is that candidate's alone; the memory after importing the library and reading the bytes is
reported too (the difference is what extraction itself needs). Fidelity checks on the fidelity
files: headings as Markdown headers, table rows kept on one line each, reading order, special
characters kept. Install size: ``pip install --dry-run --report`` of the candidate into an empty
target lists every package it brings; their installed sizes are summed from the packages' RECORD.

Candidates: ragops (pypdfium2 + python-docx, as wrapped in ragops.parsing), pypdfium2 plain
``get_text_range``, pypdf ``extract_text``, pdfplumber ``extract_text``, markitdown
(``MarkItDown().convert``: pdfminer.six for PDF, mammoth for Word). The ones that are not project
dependencies are looked up in ``--candidates-path`` (installed there with ``pip --target``)::

    .venv/bin/pip install --target /tmp/bench-extract pypdf==7.1.0 pdfplumber==0.11.10 \\
        'markitdown[pdf,docx]==0.1.9'
    .venv/bin/python bench/extract_formats.py --candidates-path /tmp/bench-extract
    # writes bench/results/extract_formats.{json,md}; add --no-sizes to skip the pip look-ups
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
RESULTS = SCRIPT.parent / "results"
PDF_CANDIDATES = ["ragops", "pypdfium2", "pypdf", "pdfplumber", "markitdown"]
DOCX_CANDIDATES = ["ragops", "markitdown"]
INSTALL = {"ragops-pdf": ["pypdfium2==5.15.2"], "ragops-docx": ["python-docx==1.2.0"],
           "pypdf": ["pypdf==7.1.0"], "pdfplumber": ["pdfplumber==0.11.10"],
           "markitdown": ["markitdown[pdf,docx]==0.1.9"]}
PROSE = ("The scheduler restarts when its heartbeat stops, and the api-server keeps serving the last state "
         "it read from the metadata database. ")
SPECIAL = "café – naïve € 10 µg"
TABLE = [("Service", "Port", "Owner"), ("scheduler", "8793", "platform"), ("api-server", "8080", "web")]
DEJAVU = "/usr/share/fonts/truetype/dejavu"
IMPORTS = {"ragops": ["ragops.parsing.pdf", "ragops.parsing.word", "pypdfium2", "docx"], "pypdfium2": ["pypdfium2"],
           "pypdf": ["pypdf"], "pdfplumber": ["pdfplumber"], "markitdown": ["markitdown"]}
ORDER = ["Alpha paragraph opens the section.", "Bravo paragraph follows it.", "Charlie paragraph closes it."]


# ------------------------------------------------------------------------------------------ inputs


def write_pdf(path: Path, pages: int, fidelity: bool) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Benchmark document")
    family = "Helvetica"
    if Path(DEJAVU, "DejaVuSans.ttf").exists():  # a Unicode font: the en dash and µ need one
        family = "DejaVu"
        pdf.add_font(family, "", str(Path(DEJAVU, "DejaVuSans.ttf")))
        pdf.add_font(family, "B", str(Path(DEJAVU, "DejaVuSans-Bold.ttf")))
    for n in range(pages):
        pdf.add_page()
        if fidelity:
            pdf.set_font(family, "B", 20)
            pdf.cell(0, 10, "Operations guide", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, "B", 15)
        pdf.cell(0, 10, f"Restarting the scheduler {n + 1}" if not fidelity else "Restarting the scheduler",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, "", 11)
        if fidelity:
            for p in ORDER:
                pdf.multi_cell(0, 6, p + " " + PROSE, new_x="LMARGIN", new_y="NEXT")
            special = SPECIAL if family == "DejaVu" else SPECIAL.encode("latin-1", "replace").decode("latin-1")
            pdf.multi_cell(0, 6, f"Special characters: {special}.", new_x="LMARGIN", new_y="NEXT")
            with pdf.table() as table:
                for row in TABLE:
                    cells = table.row()
                    for c in row:
                        cells.cell(c)
        else:
            pdf.multi_cell(0, 6, f"Page {n + 1}. " + PROSE * 20, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def write_docx(path: Path, sections: int, fidelity: bool) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Operations guide", level=0)
    for n in range(sections):
        d.add_heading("Restarting the scheduler" + ("" if fidelity else f" {n + 1}"), level=1)
        for p in (ORDER + [f"Special characters: {SPECIAL}."]) if fidelity else [PROSE * 3] * 3:
            d.add_paragraph(p if not fidelity else p + " " + PROSE)
        if fidelity or n % 10 == 0:
            t = d.add_table(rows=len(TABLE), cols=3)
            for r, row in enumerate(TABLE):
                for c, v in enumerate(row):
                    t.cell(r, c).text = v
    d.save(str(path))


# ------------------------------------------------------------------------------------------ worker


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def extract(candidate: str, path: Path) -> tuple[str, int]:
    """(text, pages) the candidate extracts from the file; each imports its library lazily."""
    data = path.read_bytes()
    if candidate == "ragops":
        from ragops.parsing import parse_file

        doc = parse_file(path.name, data, path.suffix[1:])
        return doc.text, len(doc.page_starts)
    if candidate == "pypdfium2":
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(data)
        parts = []
        for i in range(len(pdf)):
            page = pdf[i]
            tp = page.get_textpage()
            parts.append(tp.get_text_range())
            tp.close()
            page.close()
        return "\n".join(parts).replace("\r\n", "\n"), len(pdf)
    if candidate == "pypdf":
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        return "\n".join(p.extract_text() or "" for p in reader.pages), len(reader.pages)
    if candidate == "pdfplumber":
        import pdfplumber

        parts = []
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            for page in pdf.pages:
                parts.append(page.extract_text() or "")
                page.close()  # frees the page's cached objects
            return "\n".join(parts), len(pdf.pages)
    if candidate == "markitdown":
        from markitdown import MarkItDown

        text = MarkItDown().convert_stream(io.BytesIO(data), file_extension=path.suffix).text_content
        return text, 0
    raise SystemExit(f"unknown candidate {candidate}")


def worker(candidate: str, path: Path) -> None:
    import importlib

    import_t = time.perf_counter()
    for module in IMPORTS[candidate]:
        importlib.import_module(module)
    after_import = _rss_kib()
    import_s = time.perf_counter() - import_t
    t0 = time.perf_counter()
    text, pages = extract(candidate, path)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "pages": pages, "chars": len(text), "rss_after_import_kib": after_import,
                      "peak_rss_kib": _hwm_kib(), "import_s": import_s, "text": text if len(text) < 20000 else ""}))


# ------------------------------------------------------------------------------------------ checks


def fidelity(text: str, fmt: str) -> dict[str, bool]:
    lines = [ln.strip() for ln in text.splitlines()]
    rows = [any(all(c in ln for c in row) and ln.find(row[0]) < ln.find(row[2]) for ln in lines) for row in TABLE]
    pos = [text.find(p) for p in ORDER]
    return {
        "headings_markdown": any(ln.lstrip("#").strip() == "Restarting the scheduler" and ln.startswith("#")
                                 for ln in lines),
        "table_rows_kept": all(rows),
        "table_markdown": all(re.search(rf"^\|\s*{re.escape(r[0])}\s*\|\s*{r[1]}\s*\|\s*{r[2]}\s*\|$", text, re.M)
                              for r in TABLE),
        "reading_order": all(p >= 0 for p in pos) and pos == sorted(pos),
        "special_chars_kept": SPECIAL in " ".join(text.split()),
    }


def run_worker(candidate: str, path: Path, extra: str | None) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT / "include"), os.environ.get("PYTHONPATH", "")) if p))
    if extra:
        env["BENCH_EXTRA_PATH"] = extra
    proc = subprocess.run([sys.executable, str(SCRIPT), "--worker", candidate, str(path)], env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def install_size(specs: list[str]) -> dict[str, Any]:
    """Installed size (MB) and package count of what ``pip install specs`` brings into an empty target."""
    from importlib import metadata

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                               "--target", tmp + "/t", "--report", str(report), *specs], capture_output=True,
                              text=True)
        if proc.returncode:
            return {"error": proc.stderr.strip()[-300:]}
        names = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    paths = [*sys.path, *(os.environ.get("BENCH_EXTRA_PATH", "").split(os.pathsep))]
    total, unknown = 0, []
    for name in names:
        dists = list(metadata.distributions(name=name, path=[p for p in paths if p]))
        if not dists or not dists[0].files:
            unknown.append(name)
            continue
        total += sum(f.size or 0 for f in dists[0].files if f.size)
    return {"packages": len(names), "mb": round(total / 1e6, 1), "not_measured": unknown}


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("CANDIDATE", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--candidates-path", help="where pypdf, pdfplumber and markitdown were pip-installed --target")
    ap.add_argument("--pages", type=int, default=500, help="pages of big.pdf and sections of big.docx")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each fast candidate (median time, max RSS)")
    ap.add_argument("--no-sizes", action="store_true", help="skip the install-size look-ups (pip --dry-run)")
    ap.add_argument("--out", default=str(RESULTS / "extract_formats"))
    args = ap.parse_args()
    if args.worker:
        if os.environ.get("BENCH_EXTRA_PATH"):
            sys.path.append(os.environ["BENCH_EXTRA_PATH"])  # after the project's packages: those win
        worker(args.worker[0], Path(args.worker[1]))
        return
    if args.candidates_path:
        os.environ["BENCH_EXTRA_PATH"] = args.candidates_path
    results: dict[str, Any] = {"command": " ".join(["python", "bench/extract_formats.py", *sys.argv[1:]]),
                               "pages": args.pages, "python": sys.version.split()[0], "cpus": os.cpu_count(),
                               "load_at_start": list(os.getloadavg()), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_pdf(d / "fidelity.pdf", 1, True)
        write_pdf(d / "big.pdf", args.pages, False)
        write_docx(d / "fidelity.docx", 1, True)
        write_docx(d / "big.docx", args.pages, False)
        small = max(args.pages // 10, 1)
        write_pdf(d / "small.pdf", small, False)
        results["input_bytes"] = {p.name: p.stat().st_size for p in sorted(d.iterdir())}
        # bounded memory: ragops' peak RSS on a tenth of the pages, beside the full file's below
        run = run_worker("ragops", d / "small.pdf", args.candidates_path)
        results["ragops_pdf_small"] = {"pages": small, "peak_rss_mb": round(run["peak_rss_kib"] / 1024, 1),
                                       "rss_after_import_mb": round(run["rss_after_import_kib"] / 1024, 1),
                                       "seconds": round(run["seconds"], 3)}
        for fmt, cands in (("pdf", PDF_CANDIDATES), ("docx", DOCX_CANDIDATES)):
            for cand in cands:
                fid = run_worker(cand, d / f"fidelity.{fmt}", args.candidates_path)
                big = run_worker(cand, d / f"big.{fmt}", args.candidates_path)
                if "error" not in big and big["seconds"] < 20:  # cheap enough to repeat: the median of 3 runs
                    more = [run_worker(cand, d / f"big.{fmt}", args.candidates_path) for _ in range(args.repeat - 1)]
                    runs = sorted([big, *(m for m in more if "error" not in m)], key=lambda m: m["seconds"])
                    big = dict(runs[len(runs) // 2], peak_rss_kib=max(m["peak_rss_kib"] for m in runs))
                row: dict[str, Any] = {"format": fmt, "candidate": cand}
                if "error" in fid or "error" in big:
                    row["error"] = fid.get("error") or big.get("error")
                else:
                    row.update(fidelity(fid["text"], fmt))
                    row.update(seconds=round(big["seconds"], 3), units_per_s=round(args.pages / big["seconds"], 1),
                               chars=big["chars"], peak_rss_mb=round(big["peak_rss_kib"] / 1024, 1),
                               rss_after_import_mb=round(big["rss_after_import_kib"] / 1024, 1),
                               import_s=round(big["import_s"], 2))
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
    if not args.no_sizes:
        results["install"] = {k: install_size(v) for k, v in INSTALL.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Text extraction: PDF ({r['pages']} pages) and Word ({r['pages']} sections)", "",
             f"`{r['command']}` · Python {r['python']} · {r['cpus']} CPUs · load at start "
             f"{', '.join(f'{x:.2f}' for x in r['load_at_start'])}", "",
             "| format | candidate | pages (sections)/s | seconds | peak RSS MB | RSS after import MB | headings | "
             "table rows | Markdown table | reading order | special chars |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "no"}
    for x in r["runs"]:
        if "error" in x:
            lines.append(f"| {x['format']} | {x['candidate']} | error: {x['error']} | | | | | | | | |")
            continue
        lines.append(f"| {x['format']} | {x['candidate']} | {x['units_per_s']} | {x['seconds']} | {x['peak_rss_mb']} | "
                     f"{x['rss_after_import_mb']} | {yes[x['headings_markdown']]} | {yes[x['table_rows_kept']]} | "
                     f"{yes[x['table_markdown']]} | "
                     f"{yes[x['reading_order']]} | {yes[x['special_chars_kept']]} |")
    if r.get("ragops_pdf_small"):
        sm = r["ragops_pdf_small"]
        big = next((x for x in r["runs"] if x["candidate"] == "ragops" and x["format"] == "pdf" and "error" not in x),
                   None)
        if big:
            lines += ["", f"Bounded memory: ragops reads {sm['pages']} pages at a peak RSS of {sm['peak_rss_mb']} MB "
                          f"and {r['pages']} pages at {big['peak_rss_mb']} MB (after import: {sm['rss_after_import_mb']} "
                          f"MB); the {r['pages']}-page text itself is {big['chars'] / 1e6:.1f} M characters."]
    if r.get("install"):
        lines += ["", "| install | packages | installed MB | not measured |", "|---|---|---|---|"]
        for k, v in r["install"].items():
            lines.append(f"| {k} | {v.get('packages', '')} | {v.get('mb', v.get('error', ''))} | "
                         f"{', '.join(v.get('not_measured', []))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
