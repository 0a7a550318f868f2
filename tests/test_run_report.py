"""What a person sees after a run: the human summary, the HTML run report (plots embedded as PNG), and
``lingua2-batch report`` re-rendering or printing it for a past run, locally and on S3."""

from __future__ import annotations

import base64
import json
import re

import pytest

from lingua2_batch.cli import main
from lingua2_batch.pipeline.report import per_file
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, make_corpus, upload_folder

pytestmark = pytest.mark.timeout(400)
SETTINGS = ["--num-gpus", "0", "--read-num-cpus", "0.25", "--prepare-num-cpus", "0.5", "--score-num-cpus", "0.5",
            "--batch-size", "8"]
N_ROWS = 14


@pytest.fixture(scope="module")
def finished_run(s3_server, ray_local, scratch_model, tmp_path_factory):
    """One compress run through the CLI over 2 files, one row of which is empty (error 'empty_text')."""
    root = tmp_path_factory.mktemp("report-run")
    texts = corpus_texts(N_ROWS)
    texts[3] = ""
    make_corpus(str(root / "in"), texts, files=2)
    argv = ["compress", "--input", str(root / "in"), "--output", str(root / "out"), "--model", scratch_model,
            "--quiet", *SETTINGS]
    return {"root": root, "argv": argv, "output": root / "out"}


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)]


def test_summary_text_report_and_rerun(finished_run, capsys):
    assert main(finished_run["argv"]) == 0
    out = capsys.readouterr().out
    output = finished_run["output"]
    summary = json.loads((output / "_summary.json").read_text())
    lines = out.strip().splitlines()
    assert lines[0].startswith("succeeded in ")
    assert f"output      {output}  (report: {output / '_report.html'})" in out
    assert f"{N_ROWS} read, {N_ROWS} written ({N_ROWS} compressed this run, 0 carried over)" in out
    assert "errors      1 rows: empty_text 1" in out
    tokens = summary["tokens"]
    assert f"{tokens['origin']:,} in -> {tokens['compressed']:,} out, overall ratio {tokens['overall_ratio']:.2f}x" in out
    quantiles = summary["ratio_per_record"]["this_run"]
    assert f"ratio p10 {quantiles['p10']:.2f}x, p50 {quantiles['p50']:.2f}x, p90 {quantiles['p90']:.2f}x" in out
    assert "rows/s" in out and "{" not in out  # no JSON without --json

    page = (output / "_report.html").read_text()
    images = _images(page)
    assert len(images) == 3 and all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    for number in (f"{tokens['origin']:,}", f"{tokens['compressed']:,}", "empty_text"):
        assert number in page
    for name in ("part-000", "part-001"):  # one row per input file (the folder of its parts)
        assert f"<td>{name}</td>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained

    (output / "_report.html").unlink()
    assert main(finished_run["argv"]) == 0  # nothing left to do: one line
    out = capsys.readouterr().out
    assert out.strip() == (f"nothing to do: all 2 input files are already compressed with this model and these "
                           f"options ({N_ROWS} rows, overall ratio {tokens['overall_ratio']:.2f}x) in {output}")
    assert (output / "_report.html").exists()

    assert main(finished_run["argv"] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["written"] == N_ROWS


def test_report_subcommand_local(finished_run, capsys):
    output = finished_run["output"]
    if not (output / "_summary.json").exists():
        assert main(finished_run["argv"]) == 0
    (output / "_report.html").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["report", str(output)]) == 0
    assert capsys.readouterr().out.strip() == str(output / "_report.html")
    assert len(_images((output / "_report.html").read_text())) == 3

    assert main(["report", str(output), "--print"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((output / "_summary.json").read_text())
    assert text.startswith("succeeded in ")
    assert "per-record ratio (all committed records)" in text
    for entry in per_file(list(json.loads((output / "_manifest.json").read_text())["parts"].values())):
        assert re.search(rf"{re.escape(entry['output'])}\s+{entry['rows']:,}\s+{entry['rows_errored']:,}\s+"
                         rf"{entry['origin_tokens']:,}\s+{entry['compressed_tokens']:,}", text)
    assert sum(summary["ratio_per_record"]["histogram"]) == N_ROWS - 1

    assert main(["report", str(output.parent / "no-run-here")]) == 2
    assert "no run found" in capsys.readouterr().err


def test_report_subcommand_on_s3(finished_run, s3_server, capsys):
    output = finished_run["output"]
    if not (output / "_summary.json").exists():
        assert main(finished_run["argv"]) == 0
    fs = s3_server.filesystem()
    upload_folder(fs, str(output), "corpus/report-run")
    fs.rm("corpus/report-run/_report.html")
    capsys.readouterr()
    assert main(["report", "s3://corpus/report-run"]) == 0
    assert capsys.readouterr().out.strip() == "s3://corpus/report-run/_report.html"
    with fs.open("corpus/report-run/_report.html", "rb") as handle:
        page = handle.read().decode()
    assert len(_images(page)) == 3 and "part-001" in page
    assert main(["report", "s3://corpus/report-run", "--print"]) == 0
    assert "part-000" in capsys.readouterr().out
