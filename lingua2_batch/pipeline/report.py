"""The run report: one self-contained HTML page (``_report.html`` next to ``_summary.json``) with the
per-record ratio histogram, original vs compressed tokens per file, errors by kind and a per-file table,
its plots drawn by matplotlib and embedded as base64 PNG. Built only from what a run leaves under its
output prefix (``_summary.json`` and the manifest), so ``lingua2-batch report OUTPUT`` re-renders or
prints it for any past run, local or in object storage.
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from ..storage.fs import read_json, resolve
from .summary_text import errors_text, format_summary

REPORT = "_report.html"
SUMMARY = "_summary.json"
FULL_MANIFEST = "_manifest.json"
MANIFEST_DIR = "_manifest"
MAX_BARS = 40  # files beyond this are drawn as a scatter rather than as bars


class ReportError(ValueError):
    """There is no run to report on at that location."""


@dataclass
class RunRecord:
    summary: dict[str, Any]
    files: list[dict[str, Any]]  # per output file (its parts' manifest entries summed), sorted by name


_SUMMED = ("rows", "rows_errored", "origin_tokens", "compressed_tokens")


def per_file(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifest entries summed per output file: an entry is a whole file, or one part (``unit``) of the
    folder named after its input file."""
    files: dict[str, dict[str, Any]] = {}
    for entry in entries:
        output = str(entry.get("output"))
        name = posixpath.dirname(output) if "unit" in entry and posixpath.dirname(output) else output
        total = files.setdefault(name, {"output": name, "input": entry.get("input", ""), "parts": 0,
                                        "errors_by_kind": {}, **{key: 0 for key in _SUMMED}})
        total["parts"] += 1
        for key in _SUMMED:
            total[key] += int(entry.get(key) or 0)
        for kind, count in (entry.get("errors_by_kind") or {}).items():
            total["errors_by_kind"][kind] = total["errors_by_kind"].get(kind, 0) + int(count)
    return [files[name] for name in sorted(files)]


def load_run(output_uri: str) -> RunRecord:
    """The summary and per-file numbers of the run written to ``output_uri``. A committed run has
    ``_manifest.json`` (its entries under ``parts``, or ``files`` in the one-file-per-input layout); a
    failed or running one only ``_summary.json`` and the entries under ``_manifest/``."""
    location = resolve(output_uri)
    summary = read_json(location.fs, location.join(SUMMARY))
    if not isinstance(summary, dict):
        raise ReportError(f"{output_uri}: no run found (no {SUMMARY})")
    full = read_json(location.fs, location.join(FULL_MANIFEST))
    listed = (full.get("parts") or full.get("files")) if isinstance(full, dict) else None
    if isinstance(listed, dict):
        entries = list(listed.values())
    else:
        root = location.join(MANIFEST_DIR)
        paths = [p for p in location.fs.find(root) if p.endswith(".json")] if location.fs.exists(root) else []
        entries = [e for e in (read_json(location.fs, p) for p in paths) if isinstance(e, dict) and "output" in e]
    return RunRecord(summary, per_file(entries))


def render_report(output_uri: str) -> str:
    """Write ``_report.html`` for the run under ``output_uri``; returns the report's URI."""
    run = load_run(output_uri)
    location = resolve(output_uri)
    path = location.join(REPORT)
    page = report_html(run).encode("utf-8")
    if location.is_local:
        location.fs.makedirs(location.path, exist_ok=True)
    location.fs.pipe_file(path, page)
    return location.to_uri(path)


# -- text ------------------------------------------------------------------------------------------------


def _file_ratio(entry: Mapping[str, Any]) -> float | None:
    compressed = int(entry.get("compressed_tokens") or 0)
    return int(entry.get("origin_tokens") or 0) / compressed if compressed else None


def report_text(run: RunRecord) -> str:
    """The human summary, the ratio histogram and a per-file table, as plain text."""
    lines = [format_summary(run.summary, brief_noop=False), "", "per-record ratio (all committed records)"]
    labels, counts = histogram_bins(run.summary)
    width = max(counts, default=0)
    for label, count in zip(labels, counts):
        bar = "#" * (round(30 * count / width) if width else 0)
        lines.append(f"  {label:>12}  {count:>8,}  {bar}")
    lines += ["", f"{'file':<40} {'rows':>8} {'errored':>8} {'tokens in':>12} {'tokens out':>12} {'ratio':>7}"]
    for entry in run.files:
        ratio = _file_ratio(entry)
        lines.append(f"{str(entry.get('output')):<40} {int(entry.get('rows') or 0):>8,} "
                     f"{int(entry.get('rows_errored') or 0):>8,} {int(entry.get('origin_tokens') or 0):>12,} "
                     f"{int(entry.get('compressed_tokens') or 0):>12,} "
                     f"{(f'{ratio:.2f}x' if ratio else 'n/a'):>7}")
    return "\n".join(lines)


def histogram_bins(summary: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """Bin labels (``<= 1.25x``, ..., ``> 20x``) and counts of the summary's per-record ratio histogram."""
    ratio = summary.get("ratio_per_record") or {}
    edges, counts = list(ratio.get("histogram_upper_edges") or []), [int(c) for c in ratio.get("histogram") or []]
    if not counts:
        return [], []
    labels = []
    for index, edge in enumerate(edges[: len(counts)]):
        if str(edge) == "inf":
            labels.append(f"> {edges[index - 1]:g}x" if index else "all")
        else:
            labels.append(f"<= {float(edge):g}x")
    return labels, counts


# -- HTML ------------------------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot()


def ratio_histogram_png(summary: Mapping[str, Any]) -> str | None:
    labels, counts = histogram_bins(summary)
    if not any(counts):
        return None
    figure, axes = _figure()
    axes.bar(range(len(counts)), counts, color="#4c72b0")
    axes.set_xticks(range(len(counts)), labels, rotation=45, ha="right")
    axes.set_ylabel("records")
    axes.set_title("compression ratio per record (origin / compressed tokens)")
    return _png(figure)


def tokens_per_file_png(files: list[Mapping[str, Any]]) -> str | None:
    if not files:
        return None
    names = [posixpath.basename(str(e.get("output"))) for e in files]
    origin = [int(e.get("origin_tokens") or 0) for e in files]
    compressed = [int(e.get("compressed_tokens") or 0) for e in files]
    if len(files) <= MAX_BARS:
        figure, axes = _figure(7.0, 1.2 + 0.3 * len(files))
        positions = range(len(files))
        axes.barh([p + 0.2 for p in positions], origin, height=0.4, label="original", color="#bbbbbb")
        axes.barh([p - 0.2 for p in positions], compressed, height=0.4, label="compressed", color="#4c72b0")
        axes.set_yticks(list(positions), names)
        axes.invert_yaxis()
        axes.set_xlabel("tokens")
        axes.legend(loc="best")
    else:
        figure, axes = _figure(5.0, 4.5)
        axes.scatter(origin, compressed, s=8, color="#4c72b0")
        axes.set_xlabel("original tokens per file")
        axes.set_ylabel("compressed tokens per file")
    axes.set_title("original vs compressed tokens per file")
    return _png(figure)


def errors_png(errors_by_kind: Mapping[str, Any]) -> str | None:
    if not errors_by_kind:
        return None
    ordered = sorted(errors_by_kind.items(), key=lambda item: -int(item[1]))
    figure, axes = _figure(6.0, 1.2 + 0.35 * len(ordered))
    axes.barh([k for k, _ in ordered], [int(v) for _, v in ordered], color="#c44e52")
    axes.invert_yaxis()
    axes.set_xlabel("records")
    axes.set_title("errors by kind")
    return _png(figure)


def _image(png: str | None, alt: str, absent: str) -> str:
    if png is None:
        return f"<p class='none'>{html.escape(absent)}</p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _file_row(entry: Mapping[str, Any]) -> str:
    ratio = _file_ratio(entry)
    cells = [
        html.escape(str(entry.get("output"))), f"{int(entry.get('rows') or 0):,}",
        f"{int(entry.get('rows_errored') or 0):,}", html.escape(errors_text(entry.get("errors_by_kind") or {})),
        f"{int(entry.get('origin_tokens') or 0):,}", f"{int(entry.get('compressed_tokens') or 0):,}",
        f"{ratio:.2f}x" if ratio else "n/a", html.escape(str(entry.get("input", ""))),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def report_html(run: RunRecord) -> str:
    summary = run.summary
    rows = summary.get("rows") or {}
    title = f"lingua2-batch run report: {summary.get('output', '')}"
    header = ["output file", "rows", "errored", "errors by kind", "tokens in", "tokens out", "ratio", "input"]
    options = summary.get("options") or {}
    settings = {"model": summary.get("model"), "mode": summary.get("compat"),
                "precision": summary.get("precision", "not recorded"), "input": summary.get("input"),
                "job key": summary.get("job_key"), **{f"option {k}": v for k, v in sorted(options.items())}}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }}
td:first-child, td:nth-child(4), td:last-child, th {{ text-align: left; }}
.none {{ color: #666; font-style: italic; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>
<pre>{html.escape(format_summary(summary, brief_noop=False))}</pre>
<h2>Per-record compression ratio</h2>
{_image(ratio_histogram_png(summary), "per-record ratio histogram", "no compressed records")}
<h2>Tokens per file</h2>
{_image(tokens_per_file_png(run.files), "original vs compressed tokens per file", "no committed files")}
<h2>Errors by kind</h2>
{_image(errors_png(rows.get("errors_by_kind") or {}), "errors by kind", "no record failed")}
<h2>Files</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in header)}</tr>
{"".join(_file_row(e) for e in run.files)}
</table>
<h2>Settings</h2>
<table>{"".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in settings.items())}</table>
</body></html>
"""
