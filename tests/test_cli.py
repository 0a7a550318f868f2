"""The command line: config file + overrides, help, exit codes, the demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lingua2_batch.cli import build_parser, config_from_args, main
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, make_corpus

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]


def test_yaml_config_with_command_line_overrides(tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "input": "s3://b/in/", "output": "s3://b/out/", "model": "m", "passthrough_columns": ["a"],
        "compression": {"rate": 0.4, "force_tokens": ["\n"]}, "num_gpus": 1, "max_replicas": 4}))
    args = build_parser().parse_args(["compress", "--config", str(tmp_path / "job.yaml"), "--rate", "0.3",
                                      "--max-replicas", "8", "--compat", "llmlingua", "--drop-consecutive"])
    config = config_from_args(args)
    assert config.options().rate == 0.3 and config.options().force_tokens == ("\n",)
    assert config.options().drop_consecutive is True
    assert (config.max_replicas, config.num_gpus, config.compat) == (8, 1.0, "llmlingua")
    assert config.passthrough_columns == ["a"] and config.text_column == "text" and config.id_column == "id"


@pytest.mark.parametrize("name", ["nightly.yaml", "rag_index.yaml"])
def test_shipped_configs_are_valid(name):
    args = build_parser().parse_args(["compress", "--config", str(REPO / "jobs" / name)])
    config = config_from_args(args)
    assert config.input.startswith("s3://") and config.model


def test_invalid_configuration_exits_2(tmp_path, capsys):
    assert main(["compress", "--input", "x", "--output", "y"]) == 2  # no model
    assert main(["compress", "--input", "x", "--output", "y", "--model", "m", "--rate", "-1"]) == 2
    (tmp_path / "bad.yaml").write_text("nonsense_key: 1\n")
    assert main(["compress", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "nonsense_key" in capsys.readouterr().err


def test_input_matching_nothing_exits_2(scratch_model, tmp_path, capsys):
    code = main(["compress", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"),
                 "--model", scratch_model, "--quiet"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_entrypoint_help_lists_options():
    proc = subprocess.run([sys.executable, "jobs/compress_corpus.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--config", "--input", "--output", "--model", "--rate", "--text-column", "--id-column",
                   "--compat", "--num-gpus", "--min-replicas", "--max-replicas", "--batch-size", "--force-tokens"):
        assert option in proc.stdout


def test_entrypoint_messages_carry_its_own_name(tmp_path):
    proc = subprocess.run([sys.executable, "jobs/compress_corpus.py", "--input", "x", "--output", "y"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "compress_corpus.py: invalid configuration: 'model' is required (--model or " \
                                  "'model:' in the config)"
    usage = subprocess.run([sys.executable, "jobs/compress_corpus.py", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=120).stdout
    assert usage.startswith("usage: compress_corpus.py [-h]")


def test_tilde_model_and_a_new_summary_folder_on_a_fresh_ray(scratch_model, tmp_path):
    """``--model '~/m'`` reaches the replicas expanded, and ``--summary-path`` in a folder that does not exist
    yet is written (its folder created) after the job succeeded."""
    home = tmp_path / "home"
    shutil.copytree(scratch_model, home / "m")
    make_corpus(str(tmp_path / "in"), corpus_texts(6), files=1)
    summary_path = tmp_path / "reports" / "nightly" / "summary.json"
    command = [sys.executable, "-m", "lingua2_batch", "compress", "--input", str(tmp_path / "in"), "--output",
               str(tmp_path / "out"), "--model", "~/m", "--summary-path", str(summary_path), "--ray-address", "local",
               "--quiet", "--num-gpus", "0", "--read-num-cpus", "0.25", "--prepare-num-cpus", "0.5",
               "--score-num-cpus", "0.5"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=360,
                          env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded" and summary["rows"]["written"] == 6
    assert summary["model_identity"].startswith(f"{home / 'm'}#")  # hashed by content


def test_compress_and_demo_on_local_ray(ray_local, scratch_model, tmp_path, capsys):
    make_corpus(str(tmp_path / "in"), corpus_texts(10), files=2)
    code = main(["compress", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model",
                 scratch_model, "--rate", "0.5", "--num-gpus", "0", "--read-num-cpus", "0.25", "--prepare-num-cpus",
                 "0.5", "--score-num-cpus", "0.5", "--quiet", "--json", "--summary-path", str(tmp_path / "summary.json")])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert " INFO " not in captured.err and "Starting execution" not in captured.err  # --quiet: Ray Data too
    assert summary["rows"]["read"] == summary["rows"]["written"] == 10
    assert json.loads((tmp_path / "summary.json").read_text())["rows"]["written"] == 10

    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"]["written"] == 36
    assert (tmp_path / "demo" / "compressed" / "_report.html").exists()
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--keep-output"]) == 0  # text summary by default
    captured = capsys.readouterr()
    assert captured.out.startswith("nothing to do: all 3 input files are already compressed")
    assert len(captured.out.strip().splitlines()) == 1
    assert "scratch checkpoint" in captured.err and "microsoft/llmlingua-2-xlm-roberta-large-meetingbank" in captured.err


# The production CLI, with a scoring replica that prints to its stdout, as libraries in workers do: Ray
# forwards worker output to the driver's stdout
NOISY_CLI = '''
import sys

import lingua2_batch.pipeline as pipeline
from lingua2_batch.cli import main
from lingua2_batch.pipeline import stages


class NoisyReplica(stages.Replica):
    def finish(self, prepared):
        print("a library's chatter on stdout", flush=True)
        return super().finish(prepared)


run_job = pipeline.run_job
pipeline.run_job = lambda config: run_job(config, replica_class=NoisyReplica)
sys.exit(main(sys.argv[1:]))
'''


def test_json_on_stdout_is_the_summary_alone_whatever_ray_prints(scratch_model, tmp_path):
    make_corpus(str(tmp_path / "in"), corpus_texts(6), files=1)
    (tmp_path / "noisy_cli.py").write_text(NOISY_CLI)
    command = [sys.executable, str(tmp_path / "noisy_cli.py"), "compress", "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--model", scratch_model, "--json", "--ray-address", "local",
               "--num-gpus", "0", "--read-num-cpus", "0.25", "--prepare-num-cpus", "0.5", "--score-num-cpus", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=360, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["rows"]["written"] == 6  # nothing but the summary
    assert "a library's chatter on stdout" in proc.stderr  # forwarded, to stderr with the logs
