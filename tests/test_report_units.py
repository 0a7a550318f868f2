"""The run report from manifest entries alone (no Ray): parts summed per output file, and the page."""

from __future__ import annotations

import base64
import re

from lingua2_batch.pipeline.report import RunRecord, per_file, report_html, report_text


def _entry(output: str, rows: int, errored: int, origin: int, compressed: int, errors=None, unit=True) -> dict:
    entry = {"output": output, "input": "s3://b/in/" + output.split("/")[0], "rows": rows, "rows_errored": errored,
             "origin_tokens": origin, "compressed_tokens": compressed, "errors_by_kind": errors or {}}
    if unit:
        entry["unit"] = {"row_groups": [0]}
    return entry


def test_parts_are_summed_per_output_file():
    files = per_file([
        _entry("b.parquet/part-00001.parquet", 5, 1, 500, 100, {"too_large": 1}),
        _entry("b.parquet/part-00000.parquet", 10, 2, 1000, 400, {"empty_text": 2}),
        _entry("a.parquet/part-00000.parquet", 3, 0, 300, 300),
        _entry("c.parquet", 4, 0, 40, 20, unit=False),  # the one-file-per-input layout
    ])
    assert [f["output"] for f in files] == ["a.parquet", "b.parquet", "c.parquet"]
    b = files[1]
    assert (b["parts"], b["rows"], b["rows_errored"], b["origin_tokens"], b["compressed_tokens"]) == (2, 15, 3, 1500, 500)
    assert b["errors_by_kind"] == {"too_large": 1, "empty_text": 2}


def test_page_holds_the_numbers_and_png_plots():
    summary = {"status": "succeeded", "output": "s3://b/out/", "time_s": 12.5, "model": "org/name",
               "files": {"total": 2, "committed": 2, "skipped_already_done": 0, "processed_this_run": 2},
               "rows": {"read": 18, "written": 18, "unaccounted": 0, "errored": 3,
                        "errors_by_kind": {"empty_text": 2, "too_large": 1}, "processed_this_run": 18,
                        "carried_over": 0},
               "tokens": {"origin": 1800, "compressed": 800, "overall_ratio": 2.25},
               "ratio_per_record": {"histogram_upper_edges": [1.0, 2.0, 3.0, "inf"], "histogram": [0, 5, 9, 1],
                                    "this_run": {"p10": 1.5, "p50": 2.2, "p90": 2.9}},
               "throughput": {"rows_per_s": 1.44}, "model_work": True}
    run = RunRecord(summary, per_file([_entry("a.parquet/part-00000.parquet", 3, 0, 300, 300),
                                       _entry("b.parquet/part-00000.parquet", 15, 3, 1500, 500,
                                              {"empty_text": 2, "too_large": 1})]))
    page = report_html(run)
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == ["per-record ratio histogram", "original vs compressed tokens per file",
                                          "errors by kind"]
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)
    for fragment in ("1,800 in -&gt; 800 out, overall ratio 2.25x", "ratio p10 1.50x, p50 2.20x, p90 2.90x",
                     "<td>b.parquet</td><td>15</td><td>3</td><td>empty_text 2, too_large 1</td><td>1,500</td>"
                     "<td>500</td><td>3.00x</td>"):
        assert fragment in page, fragment
    text = report_text(run)
    assert re.search(r"<= 3x\s+9 ", text) and re.search(r"> 3x\s+1 ", text)
    assert re.search(r"b\.parquet\s+15\s+3\s+1,500\s+500\s+3\.00x", text)
