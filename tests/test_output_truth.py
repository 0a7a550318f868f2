"""The output prefix tells the truth, whatever happened before or beside the run: inputs that change between
runs, two runs pointed at one prefix, odd file names, credentials in URIs. Every case ends in "each current
input row exactly once" (read the three ways a reader would) or a clear refusal before any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle as ray_cloudpickle

from lingua2_batch.pipeline import InputError, JobConfig, JobError, LeaseHeldError, run_job
from lingua2_batch.pipeline.lease import LEASE, Lease
from lingua2_batch.pipeline.plan import output_folder
from lingua2_batch.storage.fs import resolve
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import SlowReplica, corpus_texts, local_job_settings

# every test takes the S3 server before the module's Ray, so that Ray's workers see its endpoint
pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[1]
TEXTS = corpus_texts(30)


class SlowerReplica(SlowReplica):
    DELAY_S = 1.5


ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests package


def _write(folder, name: str, ids: list, texts: list[str] | None = None, filesystem=None) -> None:
    texts = texts or [TEXTS[position % len(TEXTS)][:300] for position in range(len(ids))]
    table = pa.table({"id": ids, "text": texts})
    path = f"{folder}/{name}"
    if filesystem is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    else:
        with filesystem.open(path, "wb") as handle:
            pq.write_table(table, handle)


def _config(input_uri: str, output: str, model: str, **values) -> JobConfig:
    return JobConfig.from_mapping({**local_job_settings, "input": input_uri, "output": output, "model": model,
                                   "rate": 0.5, **values})


def _ids_read_three_ways(output: str) -> dict[str, list]:
    import datasets
    import ray

    by_pyarrow = pq.read_table(output).column("id").to_pylist()
    by_ray = ray.data.read_parquet(output).select_columns(["id"]).to_pandas()["id"].tolist()
    by_datasets = datasets.load_dataset("parquet", data_files=f"{output}/**/*.parquet", split="train")["id"]
    return {"pyarrow": sorted(by_pyarrow), "ray": sorted(by_ray), "datasets": sorted(by_datasets)}


def test_inputs_changed_between_runs_leave_exactly_the_current_rows(s3_server, ray_local, scratch_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    for letter in "abcd":
        _write(src, f"{letter}.parquet", [f"{letter}{i}" for i in range(5)])
    run_job(_config(str(src), out, scratch_model))
    # a modified (two records kept as they were, one changed, two gone), b deleted, c renamed to c2, e added
    kept = pq.read_table(src / "a.parquet").column("text").to_pylist()[:2]
    _write(src, "a.parquet", [f"a{i}" for i in range(3)], kept + ["A changed text. " * 5])
    os.remove(src / "b.parquet")
    os.rename(src / "c.parquet", src / "c2.parquet")
    _write(src, "e.parquet", [f"e{i}" for i in range(4)])
    expected = sorted([f"a{i}" for i in range(3)] + [f"c{i}" for i in range(5)] + [f"d{i}" for i in range(5)]
                      + [f"e{i}" for i in range(4)])
    for incremental in (True, True, False):
        report = run_job(_config(str(src), out, scratch_model, incremental=incremental))
        if incremental and report.summary["model_work"]:  # the first rerun: a's unchanged records carried over
            assert report.summary["rows"]["carried_over"] == 2
        assert report.summary["rows"]["read"] == report.summary["rows"]["written"] == len(expected)
        assert all(ids == expected for ids in _ids_read_three_ways(out).values())
        manifest = json.loads(Path(out, "_manifest.json").read_text())
        assert sorted(manifest["parts"]) == ["a/part-00000.parquet", "c2/part-00000.parquet", "d/part-00000.parquet",
                                             "e/part-00000.parquet"]
        entries = sorted(str(p.relative_to(Path(out, "_manifest"))) for p in Path(out, "_manifest").rglob("*.json"))
        assert entries == ["a/part-00000.json", "c2/part-00000.json", "d/part-00000.json", "e/part-00000.json"]
    assert report.summary["rows"]["carried_over"] == 0  # nothing changed since the first rerun: no work at all
    assert report.summary["model_work"] is False

    # the input's ids change type: carry-over cannot match them, refused before any output
    for name in ("a", "c2", "d", "e"):
        _write(src, f"{name}.parquet", list(range(len(pq.read_table(src / f"{name}.parquet")))))
    before = {p: p.stat().st_mtime for p in Path(out).rglob("*.parquet")}
    with pytest.raises(InputError, match="type"):
        run_job(_config(str(src), out, scratch_model, incremental=True))
    assert before == {p: p.stat().st_mtime for p in Path(out).rglob("*.parquet")}


def test_a_second_run_on_the_same_prefix_is_refused_and_the_first_is_intact(s3_server, ray_local, scratch_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    for k in range(2):
        _write(src, f"part-{k}.parquet", [f"x{k}-{i}" for i in range(6)])
    outcome: dict = {}
    first = threading.Thread(target=lambda: outcome.update(report=run_job(_config(str(src), out, scratch_model),
                                                                          replica_class=SlowReplica)))
    first.start()
    deadline = time.time() + 60
    while not Path(out, "_lease.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    holder = json.loads(Path(out, "_lease.json").read_text())
    started = time.time()
    with pytest.raises(LeaseHeldError, match=holder["run_id"]) as refused:
        run_job(_config(str(src), out, scratch_model))
    assert time.time() - started < 10 and "--break-lease" in str(refused.value) and "expires" in str(refused.value)
    first.join(300)
    assert outcome["report"].summary["status"] == "succeeded"
    assert json.loads(Path(out, "_summary.json").read_text())["status"] == "succeeded"
    assert sorted(pq.read_table(out).column("id").to_pylist()) == sorted(f"x{k}-{i}" for k in range(2) for i in range(6))
    assert not Path(out, "_lease.json").exists() and not Path(out, "_staging").exists()

    # another input into the same prefix (same file names): refused, not silently mixed
    other = tmp_path / "other"
    for k in range(2):
        _write(other, f"part-{k}.parquet", [f"y{k}-{i}" for i in range(3)])
    with pytest.raises(InputError, match="--overwrite"):
        run_job(_config(str(other), out, scratch_model))
    run_job(_config(str(other), out, scratch_model, overwrite=True))
    assert sorted(pq.read_table(out).column("id").to_pylist()) == sorted(f"y{k}-{i}" for k in range(2) for i in range(3))


def test_a_run_whose_lease_was_taken_over_stops_and_leaves_the_output_to_the_new_holder(
        s3_server, ray_local, scratch_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    for k in range(4):
        _write(src, f"part-{k}.parquet", [f"x{k}-{i}" for i in range(6)])
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = run_job(_config(str(src), out, scratch_model, lease_ttl_s=3),
                                        replica_class=SlowerReplica)
        except JobError as error:
            outcome["error"] = error

    first = threading.Thread(target=run)
    first.start()
    deadline = time.time() + 120
    while time.time() < deadline and (json.loads(Path(out, "_summary.json").read_text()).get("status")
                                      if Path(out, "_summary.json").exists() else None) != "running":
        time.sleep(0.05)
    # an operator breaks the lease of the running job (as a run taking over an expired lease would)
    breaker = Lease(resolve(out), "breaking-run", 60.0, io_deadline_s=10)
    breaker.acquire(break_lease=True)
    try:
        first.join(300)
        assert "report" not in outcome, "a run that lost its lease must not report success"
        assert f"lost the lease of {out} to breaking-run" in str(outcome["error"]), outcome["error"]
        # nothing of the stopped run's ending was written into the output the breaker now holds
        assert json.loads(Path(out, LEASE).read_text())["run_id"] == "breaking-run"
        assert json.loads(Path(out, "_summary.json").read_text())["status"] == "running"
        assert not Path(out, "_SUCCESS").exists()
    finally:
        breaker.release()


def test_every_listed_file_is_read_or_refused_up_front(s3_server, ray_local, scratch_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    read = ["X.PARQUET", "y.pq", "z.parq", "a#b.parquet", "q?r.parquet", "sp ace.parquet", "sub/w.parquet"]
    skipped = ["_x.parquet", ".x.parquet", "_dir/x.parquet", "notes.txt"]
    for number, name in enumerate(read + skipped):
        _write(src, name, [f"{number}-{i}" for i in range(2)])
    report = run_job(_config(str(src), out, scratch_model))
    assert report.summary["rows"]["read"] == report.summary["rows"]["written"] == 2 * len(read)
    assert sorted(s["name"] for s in report.summary["skipped_inputs"]) == sorted(skipped)
    assert sorted(pq.read_table(out).column("id").to_pylist()) == sorted(f"{n}-{i}" for n in range(len(read)) for i in range(2))

    bad = tmp_path / "bad"
    _write(bad, "fine.parquet", ["f1"])
    _write(bad, "tab\there.parquet", ["t1"])
    with pytest.raises(InputError, match="control character"):
        run_job(_config(str(bad), str(tmp_path / "bad-out"), scratch_model))
    assert not Path(tmp_path / "bad-out").exists() or not list(Path(tmp_path / "bad-out").rglob("*.parquet"))


def test_output_names_keep_partitions_and_the_input_s_own_escapes():
    assert output_folder("a/b.parquet") == "a/b"
    # Spark's escaped partition values stay as written, so readers decode them to the input's values
    assert output_folder("ts=2024-01-01 10%3A00%3A00/city=New%20York/p.snappy.parquet") == \
        "ts=2024-01-01 10%3A00%3A00/city=New%20York/p.snappy"
    assert output_folder("shard=1.parquet") == "shard%3D1"  # a file's own name is no partition
    assert output_folder("x/y=z/w=v.PARQUET") == "x/y=z/w%3Dv"
    assert output_folder("q?x.parquet") == "q%3Fx"
    assert output_folder("100%.parquet") == "100%25"  # a bare % is no escape
    assert output_folder("é.pq") == "%C3%A9"


def _encoded(values: list, encoding: str) -> pa.Array:
    plain = pa.array(values, pa.string())
    return {"string": plain, "large_string": plain.cast(pa.large_string()), "view": plain.cast(pa.string_view()),
            "dictionary": plain.dictionary_encode()}[encoding]


def test_the_output_reads_back_as_the_input_whatever_its_names_and_encodings(
        s3_server, ray_local, scratch_model, tmp_path):
    """Writers differ: pandas' categories are dictionaries, polars writes large_string, newer writers
    string_view; Spark escapes partition values; file names may hold '=' or (locally) '?'. Ids, texts and
    pass-through columns in any of these encodings are one schema, and the output read back has the input's
    rows, values and partition columns (and no column the input lacked)."""
    src, out = tmp_path / "in", str(tmp_path / "out")
    layout = {"ts=2024-01-01 10%3A00%3A00/part-0.snappy.parquet": "string",
              "shard=1.parquet": "large_string", "b.parquet": "view", "what?c.parquet": "dictionary"}
    expected = {}  # id -> (text, src, the partition value ts)
    for number, (name, encoding) in enumerate(layout.items()):
        ids = [f"{number}-{i}" for i in range(3)]
        texts = [TEXTS[(3 * number + i) % len(TEXTS)][:300] for i in range(3)]
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": _encoded(ids, encoding), "text": _encoded(texts, encoding),
                                 "src": _encoded([name] * 3, encoding)}), src / name)
        expected.update({i: (t, name, "2024-01-01 10:00:00" if name.startswith("ts=") else None)
                         for i, t in zip(ids, texts)})
    settings = {"keep_text": True, "passthrough_columns": ["src"], "incremental": True}
    report = run_job(_config(str(src), out, scratch_model, **settings))
    assert report.summary["rows"]["written"] == 12 and report.summary["rows"]["errored"] == 0
    assert sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("part-*.parquet")) == [
        "b/part-00000.parquet", "shard%3D1/part-00000.parquet",
        "ts=2024-01-01 10%3A00%3A00/part-0.snappy/part-00000.parquet", "what%3Fc/part-00000.parquet"]

    def rows(table: pa.Table) -> dict[str, tuple]:
        return {r["id"]: (r["text"], r["src"], r["ts"]) for r in table.to_pylist()}

    written = pq.read_table(out)  # the output is one schema (its input, mixed like this, is not for pyarrow)
    assert "shard" not in written.column_names and written.num_rows == 12
    assert rows(written) == expected

    # incremental: ids in every encoding match their previous results
    expected["2-0"] = ("A new text for this row.", *expected["2-0"][1:])
    changed = pa.table({"id": _encoded(["2-0", "2-1", "2-2"], "view"),
                        "text": _encoded([expected[i][0] for i in ("2-0", "2-1", "2-2")], "view"),
                        "src": _encoded(["b.parquet"] * 3, "view")})
    pq.write_table(changed, src / "b.parquet")
    report = run_job(_config(str(src), out, scratch_model, **settings))
    assert report.summary["rows"]["carried_over"] == 2 and report.summary["files"]["skipped_already_done"] == 3
    assert rows(pq.read_table(out)) == expected


def test_a_null_typed_id_column_is_an_input_error(s3_server, ray_local, scratch_model, tmp_path):
    src = tmp_path / "in"
    _write(src, "a.parquet", ["a1", "a2"])
    pq.write_table(pa.table({"id": pa.nulls(2), "text": ["Some text here.", "More text here."]}), src / "b.parquet")
    with pytest.raises(InputError, match="2 null values"):
        run_job(_config(str(src), str(tmp_path / "out"), scratch_model))
    assert not list(Path(tmp_path / "out").rglob("*.parquet"))


CANARIES = {"AWS_SECRET_ACCESS_KEY": "canary-secret-7f3e", "AWS_SESSION_TOKEN": "canary-token-91ab"}


def _grep_tree(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_credentials_are_never_written(s3_server, ray_local, scratch_model, tmp_path):
    import boto3

    fs = s3_server.filesystem()
    _write("corpus/secret-in", "doc.parquet", [f"s{i}" for i in range(4)], filesystem=fs)
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    presigned = client.generate_presigned_url("get_object", Params={"Bucket": "corpus", "Key": "secret-in/doc.parquet"},
                                              ExpiresIn=600)
    signature = [part.split("=", 1)[1] for part in presigned.split("?", 1)[1].split("&") if "Signature" in part][0]
    env = {**os.environ, **CANARIES, "PYTHONPATH": str(REPO)}
    settings = {**local_job_settings, "model": scratch_model, "rate": 0.5}
    runs = []
    for name, input_uri in (("presigned", presigned), ("userinfo", "s3://AKIACANARY:canary-userinfo-secret@corpus/secret-in/")):
        output = tmp_path / f"out-{name}"
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({**settings, "input": input_uri, "output": str(output)}))
        runs.append((name, output, subprocess.run(
            [sys.executable, "-m", "lingua2_batch", "compress", "--config", str(config), "--ray-address", "local"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400)))
        logs = Path("/tmp/ray/session_latest/logs")  # this run's own local Ray session
        assert not _grep_tree(logs, [signature, "canary-userinfo-secret", *CANARIES.values()]) if logs.exists() else True
    needles = [signature, "canary-userinfo-secret", *CANARIES.values()]
    presigned_run = runs[0][2]
    assert presigned_run.returncode == 0, presigned_run.stderr[-2000:]
    assert pq.read_table(runs[0][1]).num_rows == 4
    for name, output, result in runs:
        assert not [n for n in needles if n in result.stdout + result.stderr], (name, result.stderr[-2000:])
        assert not _grep_tree(output, needles) if output.exists() else True
    assert runs[1][2].returncode in (1, 2) and runs[1][2].stderr.strip()


def test_on_s3_changed_inputs_are_retired_and_the_lease_is_conditional(s3_server, ray_local, scratch_model):
    from lingua2_batch.pipeline.lease import Lease
    from lingua2_batch.storage.fs import resolve

    fs = s3_server.filesystem()
    for name in ("a", "b", "c"):
        _write("corpus/truth-in", f"{name}.parquet", [f"{name}{i}" for i in range(3)], filesystem=fs)
    out = "s3://corpus/truth-out"
    run_job(_config("s3://corpus/truth-in", out, scratch_model))
    fs.rm("corpus/truth-in/b.parquet")
    fs.mv("corpus/truth-in/c.parquet", "corpus/truth-in/c2.parquet")
    _write("corpus/truth-in", "d.parquet", ["d0"], filesystem=fs)
    report = run_job(_config("s3://corpus/truth-in", out, scratch_model, incremental=True))
    expected = sorted(["a0", "a1", "a2", "c0", "c1", "c2", "d0"])
    assert report.summary["rows"]["written"] == len(expected)
    fs.invalidate_cache()
    parts = sorted(p for p in fs.find("corpus/truth-out") if "/_" not in p)
    assert parts == [f"corpus/truth-out/{n}/part-00000.parquet" for n in ("a", "c2", "d")]
    ids = sorted(i for p in parts for i in pq.read_table(fs.open(p, "rb")).column("id").to_pylist())
    assert ids == expected
    assert sorted(json.loads(fs.cat_file("corpus/truth-out/_manifest.json"))["parts"]) == [
        "a/part-00000.parquet", "c2/part-00000.parquet", "d/part-00000.parquet"]

    # the lease on S3: If-None-Match makes the second taker lose, whoever it is
    first = Lease(resolve(out), "run-one", ttl_s=60, io_deadline_s=10)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError, match="run-one"):
            Lease(resolve(out), "run-two", ttl_s=60, io_deadline_s=10).acquire()
    finally:
        first.release()
    assert not fs.exists("corpus/truth-out/_lease.json")
