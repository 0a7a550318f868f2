"""Corpora saved with ``datasets.Dataset.save_to_disk``, locally and on the S3 test server: every row
comes out once, equal to the core's output, and a rerun does no model work."""

from __future__ import annotations

import datasets
import pytest

from lingua2_batch import Compressor
from lingua2_batch.pipeline import JobConfig, run_job
from lingua2_batch.pipeline.job import InputError, dry_run
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, local_job_settings, read_output, upload_folder

pytestmark = pytest.mark.timeout(300)
N_ROWS = 24


def _save(path, texts, shards=2):
    dataset = datasets.Dataset.from_dict({"id": [f"doc-{i:06d}" for i in range(len(texts))], "text": texts})
    dataset.save_to_disk(str(path), num_shards=shards)


def _config(**values) -> JobConfig:
    return JobConfig.from_mapping({**local_job_settings, "rate": 0.5, **values})


def test_saved_dataset_local_and_s3(s3_server, ray_local, scratch_model, tmp_path):
    texts = corpus_texts(N_ROWS)
    expected = [r.compressed_prompt for r in Compressor(scratch_model).compress_batch(texts, rate=0.5)]
    _save(tmp_path / "saved", texts)
    # a dry run cannot plan from shards nobody has converted yet, and converts nothing itself
    with pytest.raises(InputError, match="not converted to Parquet yet"):
        dry_run(_config(input=str(tmp_path / "saved"), output=str(tmp_path / "out"), model=scratch_model))
    assert not (tmp_path / "out").exists()

    report = run_job(_config(input=str(tmp_path / "saved"), output=str(tmp_path / "out"), model=scratch_model))
    table = read_output(str(tmp_path / "out"))
    assert report.summary["rows"]["read"] == report.summary["rows"]["written"] == N_ROWS
    assert table.column("id").to_pylist() == [f"doc-{i:06d}" for i in range(N_ROWS)]
    assert table.column("compressed_text").to_pylist() == expected
    rerun = run_job(_config(input=str(tmp_path / "saved"), output=str(tmp_path / "out"), model=scratch_model))
    assert rerun.summary["model_work"] is False and rerun.summary["rows"]["written"] == N_ROWS
    planned = dry_run(_config(input=str(tmp_path / "saved"), output=str(tmp_path / "out"), model=scratch_model))
    assert planned["rows"] == {"total": N_ROWS, "to_compress": 0}  # from the conversion the first run made

    fs = s3_server.filesystem()
    upload_folder(fs, str(tmp_path / "saved"), "corpus/saved")
    remote = run_job(_config(input="s3://corpus/saved", output="s3://corpus/saved-out", model=scratch_model,
                             input_format="hf"))
    assert remote.summary["rows"]["unaccounted"] == 0
    assert read_output("corpus/saved-out", fs).column("compressed_text").to_pylist() == expected


def test_dataset_dict_and_plain_folder_are_clear_errors(scratch_model, tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": ["a"], "text": ["x"]})}).save_to_disk(
        str(tmp_path / "dict"))
    with pytest.raises(InputError, match="DatasetDict"):
        run_job(_config(input=str(tmp_path / "dict"), output=str(tmp_path / "o1"), model=scratch_model))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="save_to_disk"):
        run_job(_config(input=str(tmp_path / "plain"), output=str(tmp_path / "o2"), model=scratch_model,
                        input_format="hf"))
    assert not (tmp_path / "o1" / "_SUCCESS").exists() and not (tmp_path / "o2" / "_SUCCESS").exists()
