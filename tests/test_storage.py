"""Storage: URI resolution, input listing, confinement of output paths, atomic JSON, S3 via the standard
AWS environment (the S3 test server), checkpoints copied from s3:// once."""

from __future__ import annotations

import os
from typing import Callable

import pytest

from lingua2_batch.storage import OutputPathError, confined_join, list_input_files, localize_model, read_json, resolve, write_json
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import upload_folder


def test_list_local_folder_reads_every_suffix_and_reports_what_it_skips(tmp_path):
    names = ("b.parquet", "a.parquet", "sub/c.parquet", "D.PARQUET", "e.pq", "f.parq", "_staging/x.parquet",
             ".hidden/y.parquet", "_x.parquet", ".x.parquet", "notes.txt", "g?h.parquet", "tab\tname.parquet")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = list_input_files(resolve(str(tmp_path)))
    assert listing.root == str(tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in listing.files] == [
        "D.PARQUET", "a.parquet", "b.parquet", "e.pq", "f.parq", "g?h.parquet", "sub/c.parquet"]
    assert sorted(name for name, _ in listing.skipped) == sorted(
        ["_staging/x.parquet", ".hidden/y.parquet", "_x.parquet", ".x.parquet", "notes.txt"])
    assert [name for name, _ in listing.refused] == ["tab\tname.parquet"]
    assert "control character" in listing.refused[0][1]
    globbed = list_input_files(resolve(str(tmp_path / "*.parquet")))
    assert len(globbed.files) == 3
    with pytest.raises(FileNotFoundError):
        list_input_files(resolve(str(tmp_path / "nothing")))


def test_listing_takes_names_that_exist_literally_and_reads_folders_a_pattern_matches(tmp_path):
    for name in ("report[1].parquet", "report1.parquet", "corpus [v2]/a.parquet", "x::y/b.parquet",
                 "what?a.parquet", "glob/a.parquet", "glob/sub/b.parquet", "glob/dt=2024-01-01/c.parquet",
                 "glob/dt=2024-01-02/d.parquet", "glob/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    def listed(pattern: str) -> list[str]:
        listing = list_input_files(resolve(str(tmp_path / pattern)))
        return [os.path.relpath(f, listing.root) for f in listing.files]

    # a name with glob characters that exists is that file or folder, never the pattern it would also be
    assert listed("report[1].parquet") == ["report[1].parquet"]
    assert listed("corpus [v2]") == ["a.parquet"]
    assert listed("x::y") == ["b.parquet"]  # "::" is no URL chain in a local path
    assert listed("what?a.parquet") == ["what?a.parquet"]
    assert listed("report[0-9].parquet") == ["report1.parquet"]  # no such name: a pattern
    # a folder a pattern matches is read like a folder: nothing it holds is dropped silently
    assert listed("glob/*") == ["a.parquet", "dt=2024-01-01/c.parquet", "dt=2024-01-02/d.parquet", "sub/b.parquet"]
    assert listed("glob/dt=2024-*") == ["dt=2024-01-01/c.parquet", "dt=2024-01-02/d.parquet"]
    assert [name for name, _ in list_input_files(resolve(str(tmp_path / "glob/*"))).skipped] == ["notes.txt"]


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
    assert list_input_files(location).files == ["corpus/st/one.parquet", "corpus/st/two.parquet"]
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    client.put_object(Bucket="corpus", Key="st/three?versionId=1.parquet", Body=b"3")  # s3fs cannot even write it
    assert [name for name, _ in list_input_files(location).refused] == ["three?versionId=1.parquet"]
    client.delete_object(Bucket="corpus", Key="st/three?versionId=1.parquet")
    write_json(location.fs, "corpus/st/_m.json", {"a": 1})
    assert read_json(location.fs, "corpus/st/_m.json") == {"a": 1}
    assert read_json(location.fs, "corpus/st/none.json") is None

    monkeypatch.setenv("LINGUA2_MODEL_CACHE", str(tmp_path / "cache"))
    upload_folder(fs, scratch_model, "corpus/models/st")
    local = localize_model("s3://corpus/models/st")
    assert os.path.isfile(os.path.join(local, "config.json"))
    assert localize_model("s3://corpus/models/st") == local  # copied once
    assert localize_model(scratch_model) == scratch_model  # local folders and hub ids unchanged


def test_client_set_up_errors_are_final_and_network_errors_are_retried():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from lingua2_batch.storage.retry import with_retries

    def failing(error: Exception, calls: list) -> Callable[[], None]:
        def call() -> None:
            calls.append(error)
            raise error
        return call

    no_credentials: list = []
    with pytest.raises(NoCredentialsError):  # at once: waiting does not bring credentials
        with_retries(failing(NoCredentialsError(), no_credentials), "listing", deadline_s=60)
    unreachable: list = []
    with pytest.raises(EndpointConnectionError):
        with_retries(failing(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), unreachable), "listing",
                     deadline_s=1.0, first_wait_s=0.1)
    assert len(no_credentials) == 1 and len(unreachable) > 1
