"""A failure at run time (after the checks before Ray pass): exit 1, the job's message, then the cause,
whole, as the last line; the failed run's report says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lingua2_batch.cli import main
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, make_corpus

pytestmark = pytest.mark.timeout(400)
REPO = Path(__file__).resolve().parents[1]


def test_runtime_failure_exits_1_with_the_cause_as_the_last_line(scratch_model, tmp_path, capsys):
    broken = tmp_path / "truncated-weights"
    shutil.copytree(scratch_model, broken)  # config and tokenizer load: only the replicas find the fault
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    from safetensors import SafetensorError, safe_open

    with pytest.raises(SafetensorError) as loading:
        safe_open(str(weights), framework="pt")
    make_corpus(str(tmp_path / "in"), corpus_texts(6), files=1)
    summary_path = tmp_path / "summary.json"  # what a scheduler reads: a previous run's success must not stay
    summary_path.write_text(json.dumps({"status": "succeeded"}))
    command = [sys.executable, "-m", "lingua2_batch", "compress", "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--model", str(broken), "--ray-address", "local", "--quiet",
               "--summary-path", str(summary_path),
               "--max-task-retries", "0", "--num-gpus", "0", "--read-num-cpus", "0.25", "--prepare-num-cpus", "0.5",
               "--score-num-cpus", "0.5"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("lingua2-batch compress: job failed: ")
    assert lines[-1].startswith("lingua2-batch compress: cause: ") and "SafetensorError" in lines[-1]
    assert lines[-1].endswith(f"SafetensorError: {loading.value}")  # whole, not cut
    assert " INFO " not in proc.stderr and proc.stdout == ""
    record = json.loads(summary_path.read_text())
    assert record["status"] == "failed" and lines[-1].endswith(record["cause"])
    assert lines[-2].endswith(record["error"])

    assert main(["report", str(tmp_path / "out"), "--print"]) == 0
    assert capsys.readouterr().out.startswith("FAILED in ")


def test_report_on_an_object_store_without_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find either
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["report", "s3://some-bucket/compressed", "--print"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lingua2-batch report: could not read s3://some-bucket/compressed: NoCredentialsError: "
                   "Unable to locate credentials"]
