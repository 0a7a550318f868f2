"""Bad input: each case gets a per-record ``error`` (row kept) or a job-level error raised before any
output is committed. Every test counts rows in and out."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lingua2_batch.pipeline import InputError, JobConfig, run_job
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, local_job_settings, read_output

pytestmark = pytest.mark.timeout(300)


def _config(tmp_path, model, **values) -> JobConfig:
    return JobConfig.from_mapping({**local_job_settings, "input": str(tmp_path / "in"),
                                   "output": str(tmp_path / "out"), "model": model, **values})


def _write(tmp_path, name: str, table: pa.Table) -> None:
    (tmp_path / "in").mkdir(exist_ok=True)
    pq.write_table(table, tmp_path / "in" / name)


def _kinds(table: pa.Table) -> list:
    return [None if e is None else e.split(":")[0] for e in table.column("error").to_pylist()]


def _no_output(tmp_path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not [p for p in out.rglob("*.parquet")]


def test_bad_records_get_an_error_and_keep_their_row(ray_local, scratch_model, tmp_path):
    good = corpus_texts(3)
    texts = [good[0], None, "", "  \n\t  ", "x" * (10 * 1024 * 1024), "Bell\x07 NUL\x00 escape\x1b[31m red. Tab\tend.",
             good[1], good[2]]
    _write(tmp_path, "a.parquet", pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts}))
    report = run_job(_config(tmp_path, scratch_model))
    table = read_output(str(tmp_path / "out"))
    assert table.num_rows == len(texts) == report.summary["rows"]["read"] == report.summary["rows"]["written"]
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(len(texts))]
    assert _kinds(table) == [None, "null_text", "empty_text", "empty_text", "too_large", None, None, None]
    assert report.summary["rows"]["errors_by_kind"] == {"null_text": 1, "empty_text": 2, "too_large": 1}
    rows = table.to_pylist()
    assert rows[1]["compressed_text"] == "" and rows[4]["compressed_text"] == ""
    assert rows[5]["compressed_text"] and rows[5]["origin_tokens"] > 0  # control characters are just text


def test_binary_text_column_with_invalid_utf8_and_surrogates(ray_local, scratch_model, tmp_path):
    values = ["Plain text that is fine. It has two sentences.".encode(), b"\xff\xfe broken", b"lone \xed\xa0\x80 surrogate",
              None, "Caf\u00e9 and na\u00efve words are fine too.".encode()]
    _write(tmp_path, "b.parquet", pa.table({"id": [1, 2, 3, 4, 5], "text": pa.array(values, pa.binary())}))
    report = run_job(_config(tmp_path, scratch_model))
    table = read_output(str(tmp_path / "out"))
    assert table.num_rows == 5 == report.summary["rows"]["written"]
    assert _kinds(table) == [None, "invalid_utf8", "invalid_utf8", "null_text", None]
    assert table.schema.field("id").type == pa.int64()


def test_string_column_holding_invalid_utf8(ray_local, scratch_model, tmp_path):
    data = b"good text here.\xc3\x28bad"
    offsets = pa.array([0, 15, len(data)], pa.int32())
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets.buffers()[1], pa.py_buffer(data)])
    _write(tmp_path, "c.parquet", pa.table({"id": ["a", "b"], "text": bad}))
    report = run_job(_config(tmp_path, scratch_model))
    table = read_output(str(tmp_path / "out"))
    assert table.num_rows == 2 and _kinds(table) == [None, "invalid_utf8"]
    assert report.summary["rows"]["unaccounted"] == 0


def test_zero_row_file_is_committed_without_model_work(scratch_model, tmp_path):
    _write(tmp_path, "empty.parquet", pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    report = run_job(_config(tmp_path, scratch_model))
    assert report.summary["rows"]["read"] == 0 == report.summary["rows"]["written"]
    assert report.summary["model_work"] is False
    out = pq.read_table(tmp_path / "out" / "empty" / "part-00000.parquet")
    assert out.num_rows == 0 and "compressed_text" in out.column_names
    assert (tmp_path / "out" / "_SUCCESS").exists()


JOB_LEVEL = {
    "missing_text_column": (lambda t: _write(t, "a.parquet", pa.table({"id": ["1"], "body": ["x y"]})), "no text column"),
    "mistyped_text_column": (lambda t: _write(t, "a.parquet", pa.table({"id": ["1"], "text": [42]})), "has type int64"),
    "missing_id_column": (lambda t: _write(t, "a.parquet", pa.table({"text": ["hello there"]})), "no id column"),
    "mistyped_id_column": (lambda t: _write(t, "a.parquet", pa.table({"id": [[1, 2]], "text": ["hi"]})), "nested type"),
    "corrupt_parquet": (lambda t: (_write(t, "a.parquet", pa.table({"id": ["1"], "text": ["fine"]})),
                                   (t / "in" / "b.parquet").write_bytes(b"PAR1 this is not parquet")),
                        "not a readable Parquet file"),
    "truncated_parquet": (lambda t: (_write(t, "a.parquet", pa.table({"id": ["1"], "text": ["fine"]})),
                                     (t / "in" / "b.parquet").write_bytes((t / "in" / "a.parquet").read_bytes()[:-20])),
                          "not a readable Parquet file"),
    "schema_drift": (lambda t: (_write(t, "a.parquet", pa.table({"id": ["1"], "text": ["one"]})),
                                _write(t, "b.parquet", pa.table({"id": [2], "text": ["two"]}))), "schema drift"),
    "duplicate_ids": (lambda t: (_write(t, "a.parquet", pa.table({"id": ["1", "2"], "text": ["one", "two"]})),
                                 _write(t, "b.parquet", pa.table({"id": ["2"], "text": ["again"]}))),
                      "appear more than once"),
    "null_ids": (lambda t: _write(t, "a.parquet", pa.table({"id": ["1", None], "text": ["one", "two"]})), "null values"),
    "two_text_columns": (lambda t: _write(t, "a.parquet", pa.Table.from_arrays(
        [pa.array(["1"]), pa.array(["one"]), pa.array(["uno"])], names=["id", "text", "text"])),
        "2 columns are named 'text'"),
    "nothing_matches": (lambda t: (t / "in").mkdir(), "matches no"),
}


@pytest.mark.parametrize("case", sorted(JOB_LEVEL))
def test_job_level_errors_before_any_output(case, scratch_model, tmp_path):
    setup, message = JOB_LEVEL[case]
    setup(tmp_path)
    rows_in = sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp_path / "in").glob("*.parquet")
                  if p.read_bytes()[-4:] == b"PAR1" and p.stat().st_size > 20 and _readable(p))
    with pytest.raises(InputError, match=message):
        run_job(_config(tmp_path, scratch_model))
    assert _no_output(tmp_path), f"{case}: output was written"
    assert rows_in <= 3  # rows in; rows out = 0, all reported as a job-level error


def _readable(path) -> bool:
    try:
        pq.ParquetFile(path)
        return True
    except Exception:
        return False


def test_input_path_that_does_not_exist(scratch_model, tmp_path):
    config = JobConfig.from_mapping({**local_job_settings, "input": str(tmp_path / "nope" / "*.parquet"),
                                     "output": str(tmp_path / "out"), "model": scratch_model})
    with pytest.raises(InputError, match="matches no|does not exist"):
        run_job(config)
    assert _no_output(tmp_path)


def test_output_inside_input_is_refused(scratch_model, tmp_path):
    _write(tmp_path, "a.parquet", pa.table({"id": ["1"], "text": ["one"]}))
    config = JobConfig.from_mapping({**local_job_settings, "input": str(tmp_path / "in"),
                                     "output": str(tmp_path / "in" / "out"), "model": scratch_model})
    with pytest.raises(InputError, match="overlap"):
        run_job(config)
    assert os.listdir(tmp_path / "in") == ["a.parquet"]
