"""The Ray batch job end to end on a local Ray cluster, reading from and writing to local folders and
the S3 test server: outputs equal to the core's, every row accounted for, reruns idempotent."""

from __future__ import annotations

import json
import os

import pytest

from lingua2_batch import Compressor
from lingua2_batch.pipeline import JobConfig, run_job
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, local_job_settings, make_corpus, read_output, upload_folder

pytestmark = pytest.mark.timeout(300)
N_ROWS = 48


@pytest.fixture(scope="module")
def core_results(scratch_model):
    return Compressor(scratch_model).compress_batch(corpus_texts(N_ROWS), rate=0.5)


def _config(**values) -> JobConfig:
    return JobConfig.from_mapping({**local_job_settings, "rate": 0.5, **values})


def _assert_equal_to_core(table, results, texts):
    assert table.num_rows == len(results)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [f"doc-{i:06d}" for i in range(len(texts))]
    for row, expected in zip(rows, results):
        assert row["error"] is None
        assert row["compressed_text"] == expected.compressed_prompt
        assert row["origin_tokens"] == expected.origin_tokens
        assert row["compressed_tokens"] == expected.compressed_tokens
        assert row["ratio"] == pytest.approx(expected.ratio)
        assert row["rate"] == pytest.approx(expected.rate)
        assert row["n_chunks"] >= 1


def test_local_job_equals_core_and_accounts_for_every_row(s3_server, ray_local, scratch_model, core_results, tmp_path):
    texts = corpus_texts(N_ROWS)
    make_corpus(str(tmp_path / "in"), texts, files=3)
    report = run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                             passthrough_columns=["lang"]))
    table = read_output(str(tmp_path / "out"))
    _assert_equal_to_core(table, core_results, texts)
    assert table.column_names[:2] == ["id", "lang"] and set(table.column("lang").to_pylist()) == {"en"}
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["part-000", "part-001", "part-002", "_manifest", "_manifest.json", "_summary.json", "_SUCCESS",
         "_lease.json.lock"])
    assert os.listdir(tmp_path / "out" / "part-000") == ["part-00000.parquet"]
    summary = report.summary
    assert summary["rows"]["read"] == summary["rows"]["written"] == N_ROWS and summary["rows"]["unaccounted"] == 0
    assert summary["tokens"]["origin"] == sum(r.origin_tokens for r in core_results)
    assert summary["tokens"]["compressed"] == sum(r.compressed_tokens for r in core_results)
    assert sum(summary["ratio_per_record"]["histogram"]) == N_ROWS
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["rows"]["written"] == N_ROWS
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert {e["rows"] for e in manifest["parts"].values()} == {16}
    assert all(e["model_identity"] == summary["model_identity"] for e in manifest["parts"].values())

    # rerun: nothing to do, no model work, files untouched
    stamps = {p: os.path.getmtime(tmp_path / "out" / p) for p in ("part-000/part-00000.parquet",
                                                                    "part-001/part-00000.parquet")}
    again = run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                            passthrough_columns=["lang"]))
    assert again.summary["model_work"] is False and again.summary["files"]["skipped_already_done"] == 3
    assert again.summary["rows"]["written"] == N_ROWS
    assert stamps == {p: os.path.getmtime(tmp_path / "out" / p) for p in stamps}

    # a partial earlier run (one file lost its manifest entry, garbage in staging): only that file is redone
    os.remove(tmp_path / "out" / "_manifest" / "part-001" / "part-00000.json")
    (tmp_path / "out" / "_staging" / "old-run").mkdir(parents=True)
    (tmp_path / "out" / "_staging" / "old-run" / "part-001.parquet").write_bytes(b"half a file")
    resumed = run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                              passthrough_columns=["lang"]))
    assert resumed.summary["files"]["skipped_already_done"] == 2
    assert resumed.summary["rows"]["processed_this_run"] == 16
    assert not (tmp_path / "out" / "_staging").exists()
    _assert_equal_to_core(read_output(str(tmp_path / "out")), core_results, texts)


def test_s3_corpus_to_s3_output_with_model_on_s3(s3_server, ray_local, scratch_model, core_results):
    fs = s3_server.filesystem()
    texts = corpus_texts(N_ROWS)
    make_corpus("corpus/docs", texts, files=4, filesystem=fs)
    upload_folder(fs, scratch_model, "corpus/models/scratch")
    report = run_job(_config(input="s3://corpus/docs/", output="s3://corpus/compressed", model=scratch_model))
    table = read_output("corpus/compressed", filesystem=fs)
    _assert_equal_to_core(table, core_results, texts)
    assert report.summary["rows"]["unaccounted"] == 0
    assert fs.exists("corpus/compressed/_SUCCESS")
    assert sorted(p.split("/", 2)[2] for p in fs.find("corpus/compressed") if "/_" not in p) == [
        f"part-{i:03d}/part-00000.parquet" for i in range(4)]
    # the same checkpoint as an s3:// prefix: copied to a local cache on the node, same results
    other = run_job(_config(input="s3://corpus/docs/", output="s3://corpus/compressed-s3model",
                            model="s3://corpus/models/scratch"))
    assert other.summary["rows"]["written"] == N_ROWS
    s3_table = read_output("corpus/compressed-s3model", filesystem=fs)
    assert s3_table.column("compressed_text").to_pylist() == table.column("compressed_text").to_pylist()


def test_word_labels_and_llmlingua_compat(s3_server, ray_local, scratch_model, tmp_path):
    texts = corpus_texts(12)
    make_corpus(str(tmp_path / "in"), texts, files=2)
    run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                    compat="llmlingua", include_word_labels=True, force_tokens=["\n"]))
    table = read_output(str(tmp_path / "out"))
    expected = Compressor(scratch_model, compat="llmlingua").compress_batch(texts, rate=0.5, force_tokens=["\n"])
    assert table.column("compressed_text").to_pylist() == [r.compressed_prompt for r in expected]
    for row, result in zip(table.to_pylist(), expected):
        assert row["words"] == list(result.contexts[0].words)
        assert row["word_labels"] == [int(x) for x in result.contexts[0].labels]
        assert row["word_keep_probabilities"] == pytest.approx([float(x) for x in result.contexts[0].probabilities],
                                                               abs=1e-6)
