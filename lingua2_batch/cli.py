"""``lingua2-batch``: the command line. Subcommands only wire configuration to the pipeline:

* ``compress``  run the Ray batch job (``--input URI --output URI --model MODEL [--config job.yaml]``);
  every option can also be set in the YAML config, and options given on the command line win;
* ``demo``      the whole job on this machine with a scratch checkpoint and the shipped corpus;
* ``bench-job`` Ray job throughput next to in-process ``compress_batch`` on the same data;
* ``bench-incremental`` a nightly run's cost: full run, unchanged rerun, rerun after 1% of texts changed;
* ``bench``     registered by ``lingua2_batch.bench`` when that module provides ``add_bench_parser``.

Exit codes: 0 success; 1 the job failed or rows are unaccounted for; 2 invalid configuration or input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any, Sequence

from .core.options import CompressionOptions
from .pipeline.config import JobConfig, JobConfigError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

_JOB_TYPES: dict[str, Any] = {
    "id_column": str, "model_revision": str, "compat": str, "device": str, "dtype": str, "token_counter": str,
    "tiktoken_file": str, "max_length": int, "ray_address": str, "num_gpus": float, "previous": str,
    "summary_path": str,
}
_HELP = {
    "input": "input Parquet: s3://bucket/prefix/, any fsspec URI, a local folder or file, or a glob; "
             "a datasets.save_to_disk folder with --input-format hf",
    "output": "output prefix (s3://... or a local folder); one Parquet file per input file, plus "
              "_manifest/, _summary.json and _SUCCESS",
    "model": "checkpoint: a hub id, a local folder, or an s3:// prefix (copied once per node)",
    "text_column": "column holding the text (string or binary UTF-8)",
    "id_column": "column identifying a record (unique); '' for none",
    "passthrough_columns": "columns copied unchanged to the output",
    "input_format": "auto | parquet | hf",
    "compat": "'llmlingua' for byte-for-byte llmlingua 0.2.2 output; default extractive",
    "include_word_labels": "also write words, keep-probabilities and labels (re-threshold later without rescoring)",
    "max_document_chars": "longer texts get error 'too_large' instead of being compressed",
    "num_gpus": "GPUs per scoring replica (default: 1 if the cluster has GPUs, else 0)",
    "min_replicas": "minimum number of scoring replicas (actor pool)",
    "max_replicas": "maximum number of scoring replicas (actor pool)",
    "batch_size": "records per scoring call",
    "incremental": "carry over unchanged records (same id, same text hash) from the previous output",
    "previous": "previous run's output prefix for --incremental (default: --output)",
    "ray_address": "Ray cluster address (default: RAY_ADDRESS, a running cluster, or a new local Ray)",
    "max_task_retries": "Ray retries of a crashed task or replica batch",
    "io_retry_seconds": "how long the driver retries an unreachable object store",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group: argparse._ArgumentGroup, name: str, default: Any, kind: Any = None, help_text: str = "") -> None:
    common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text or None}
    if kind is None:
        kind = type(default)
    if kind is bool:
        group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **common)
    elif kind in (list, tuple):
        group.add_argument(_flag(name), nargs="*", metavar="VALUE", **common)
    elif kind is dict:
        return
    else:
        group.add_argument(_flag(name), type=kind, **common)


def add_compress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with any of the options below (command-line options win)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary JSON")
    job = parser.add_argument_group("job")
    for f in dataclasses.fields(JobConfig):
        if f.name == "compression":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = _JOB_TYPES.get(f.name) or type(default)
        if f.name == "ray_address":
            kind = str
        _add_field(job, f.name, default, kind, _HELP.get(f.name, ""))
    options = parser.add_argument_group("compression options (those of Compressor.compress)")
    for f in dataclasses.fields(CompressionOptions):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = type(default)
        if f.name == "force_context_ids":
            options.add_argument(_flag(f.name), dest=f.name, nargs="*", type=int, default=argparse.SUPPRESS)
            continue
        _add_field(options, f.name, default, kind, f"default {default!r}")


def load_config_file(path: str) -> dict[str, Any]:
    import fsspec
    import yaml

    with fsspec.open(path, "r", encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise JobConfigError(f"{path}: a job config must be a YAML mapping")
    return loaded


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """YAML config (if any), then every option given on the command line on top."""
    mapping: dict[str, Any] = load_config_file(args.config) if getattr(args, "config", None) else {}
    given = {k: v for k, v in vars(args).items() if k not in ("config", "quiet", "command", "handler")}
    compression = dict(mapping.pop("compression", None) or {})
    option_names = {f.name for f in dataclasses.fields(CompressionOptions)}
    for key, value in given.items():
        if key in option_names:
            compression[key] = value
            mapping.pop(key, None)
        else:
            mapping[key] = value
    mapping["compression"] = compression
    config = JobConfig.from_mapping(mapping)
    config.validate()
    return config


def _print_summary(summary: dict[str, Any], out=None) -> None:
    print(json.dumps(summary, indent=2, default=str), file=out or sys.stdout)


def run_compress(args: argparse.Namespace) -> int:
    from .pipeline import InputError, JobError, run_job

    try:
        config = config_from_args(args)
    except (JobConfigError, OSError) as error:
        print(f"lingua2-batch compress: invalid configuration: {error}", file=sys.stderr)
        return EXIT_INVALID
    try:
        report = run_job(config)
    except InputError as error:
        print(f"lingua2-batch compress: {error}", file=sys.stderr)
        return EXIT_INVALID
    except JobError as error:
        print(f"lingua2-batch compress: job failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    _print_summary(report.summary)
    if config.summary_path:
        with open(config.summary_path, "w", encoding="utf-8") as handle:
            json.dump(report.summary, handle, indent=2, default=str)
    if report.unaccounted or report.summary["status"] != "succeeded":
        print(f"lingua2-batch compress: {report.unaccounted} rows unaccounted for", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    from .pipeline.demo import run_demo as demo

    return demo(args.workdir, keep_output=args.keep_output)


def run_bench_job(args: argparse.Namespace) -> int:
    from .pipeline.bench import bench_job

    result = bench_job(rows=args.rows, repeats=args.repeats, workdir=args.workdir)
    for line in result["lines"]:
        print(json.dumps(line))
    return EXIT_OK


def run_bench_incremental(args: argparse.Namespace) -> int:
    from .pipeline.bench import bench_incremental

    for line in bench_incremental(rows=args.rows, files=args.files, changed_share=args.changed_share,
                                  workdir=args.workdir):
        print(json.dumps(line))
    return EXIT_OK


def build_parser(prog: str = "lingua2-batch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="LLMLingua-2 prompt compression at corpus scale.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    compress = subparsers.add_parser("compress", help="compress a Parquet corpus with a Ray job",
                                     description="Compress a Parquet corpus with a Ray job.")
    add_compress_arguments(compress)
    compress.set_defaults(handler=run_compress)
    demo = subparsers.add_parser("demo", help="run the job locally on the shipped corpus with a scratch model")
    demo.add_argument("--workdir", default=None, help="where the demo keeps model, corpus and output "
                                                       "(default ~/.cache/lingua2_batch/demo)")
    demo.add_argument("--keep-output", action="store_true", help="reuse a previous demo output (the rerun skips work)")
    demo.set_defaults(handler=run_demo)
    bench = subparsers.add_parser("bench-job", help="Ray job throughput vs in-process compress_batch")
    bench.add_argument("--rows", type=int, default=360)
    bench.add_argument("--repeats", type=int, default=1)
    bench.add_argument("--workdir", default=None)
    bench.set_defaults(handler=run_bench_job)
    incremental = subparsers.add_parser("bench-incremental",
                                        help="a nightly run's cost: full run, unchanged rerun, 1%% changed rerun")
    incremental.add_argument("--rows", type=int, default=10_000)
    incremental.add_argument("--files", type=int, default=10)
    incremental.add_argument("--changed-share", type=float, default=0.01)
    incremental.add_argument("--workdir", default=None)
    incremental.set_defaults(handler=run_bench_incremental)
    from .pipeline.bench import add_bench_scale_parser

    add_bench_scale_parser(subparsers)
    _register_optional(subparsers)
    return parser


def _register_optional(subparsers: Any) -> None:
    """Subcommands other modules provide (``lingua2_batch.bench.add_bench_parser``), when present."""
    try:
        from . import bench as bench_module  # type: ignore[attr-defined]
    except ImportError:
        return
    register = getattr(bench_module, "add_bench_parser", None)
    if callable(register):
        register(subparsers)


def main(argv: Sequence[str] | None = None, prog: str = "lingua2-batch") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "quiet", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=sys.stderr)
    handler = getattr(args, "handler", None)
    if handler is None:  # a registered subcommand that dispatches through ``func``
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return EXIT_INVALID
        result = func(args)
        return int(result or 0)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
