"""Storage: URI resolution, input listing, confinement of output paths, atomic JSON, S3 via the standard
AWS environment (the S3 test server), checkpoints copied from s3:// once."""

from __future__ import annotations

import os

import pytest

from lingua2_batch.storage import OutputPathError, confined_join, list_input_files, localize_model, read_json, resolve, write_json
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import upload_folder


def test_list_local_folder_skips_hidden_and_underscore(tmp_path):
    for name in ("b.parquet", "a.parquet", "sub/c.parquet", "_staging/x.parquet", ".hidden/y.parquet", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    root, files = list_input_files(resolve(str(tmp_path)))
    assert root == str(tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in files] == ["a.parquet", "b.parquet", "sub/c.parquet"]
    _, globbed = list_input_files(resolve(str(tmp_path / "*.parquet")))
    assert len(globbed) == 2
    with pytest.raises(FileNotFoundError):
        list_input_files(resolve(str(tmp_path / "nothing")))


@pytest.mark.parametrize("bad", ["../x.parquet", "/etc/passwd", "a/../../b", "", "a/./../..", "a\\b"])
def test_output_paths_are_confined(bad):
    with pytest.raises(OutputPathError):
        confined_join("/out", bad)
    assert confined_join("/out", "a/b.parquet") == "/out/a/b.parquet"


def test_s3_listing_json_and_model_copy(s3_server, scratch_model, tmp_path, monkeypatch):
    fs = s3_server.filesystem()
    fs.pipe_file("corpus/st/one.parquet", b"1")
    fs.pipe_file("corpus/st/two.parquet", b"2")
    location = resolve("s3://corpus/st/")
    assert location.path == "corpus/st" and not location.is_local
    assert list_input_files(location)[1] == ["corpus/st/one.parquet", "corpus/st/two.parquet"]
    write_json(location.fs, "corpus/st/_m.json", {"a": 1})
    assert read_json(location.fs, "corpus/st/_m.json") == {"a": 1}
    assert read_json(location.fs, "corpus/st/none.json") is None

    monkeypatch.setenv("LINGUA2_MODEL_CACHE", str(tmp_path / "cache"))
    upload_folder(fs, scratch_model, "corpus/models/st")
    local = localize_model("s3://corpus/models/st")
    assert os.path.isfile(os.path.join(local, "config.json"))
    assert localize_model("s3://corpus/models/st") == local  # copied once
    assert localize_model(scratch_model) == scratch_model  # local folders and hub ids unchanged
