"""``lingua2-batch``: the command line. Subcommands only wire configuration to the pipeline:

* ``compress``  run the Ray batch job (``--input URI --output URI --model MODEL [--config job.yaml]``);
  every option can also be set in the YAML config, and options given on the command line win;
* ``demo``      the whole job on this machine with a scratch checkpoint and the shipped corpus;
* ``bench-job`` Ray job throughput next to in-process ``compress_batch`` on the same data;
* ``bench-incremental`` a nightly run's cost: full run, unchanged rerun, rerun after 1% of texts changed;
* ``report``    re-render ``OUTPUT/_report.html`` of a past run, or print it as text (``--print``);
* ``bench``     registered by ``lingua2_batch.bench`` when that module provides ``add_bench_parser``.

Exit codes: 0 success; 1 the job failed or rows are unaccounted for; 2 invalid configuration or input;
130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import sys
import typing
from typing import Any, Sequence

from . import __version__
from .core.options import CompressionOptions
from .exit_codes import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from .pipeline.config import DEVICE_CHOICES, DTYPE_CHOICES, JobConfig, JobConfigError

# Compressor.compress options: the reference's names, defaults and meaning
_OPTION_HELP = {
    "rate": "share of tokens to keep, in (0, 1]",
    "target_token": "keep about this many tokens instead of a rate (-1: use --rate)",
    "use_context_level_filter": "drop whole contexts first (for lists of contexts)",
    "use_token_level_filter": "drop words within the kept contexts",
    "target_context": "keep this many contexts (-1: by --context-level-rate)",
    "context_level_rate": "share of contexts the context-level filter keeps",
    "context_level_target_token": "token budget of the context-level filter (-1: by rate)",
    "force_context_ids": "indices of contexts always kept",
    "return_word_label": "also return each word with its keep label (fn_labeled_original_prompt)",
    "word_sep": "separator between words in the word-label output",
    "label_sep": "separator between a word and its label in the word-label output",
    "token_to_word": "how a word's probability comes from its pieces",
    "force_tokens": "words always kept (e.g. '\\n' '?'), at most 100",
    "force_reserve_digit": "always keep words containing digits",
    "drop_consecutive": "drop a force token repeated right after itself",
    "chunk_end_tokens": "tokens where a chunk may end",
}
_OPTION_CHOICES = {"token_to_word": ("mean", "first")}
# string options whose values are often whitespace: written with backslash escapes, as --help shows defaults
_ESCAPED_OPTIONS = ("force_tokens", "chunk_end_tokens", "word_sep", "label_sep")
_ESCAPES_HELP = "; backslash escapes are decoded ('\\n' a newline, '\\t' a tab, '\\\\' a backslash)"
_METAVARS = {"device": "{" + ",".join(DEVICE_CHOICES) + "}", "dtype": "{" + ",".join(DTYPE_CHOICES) + "}"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown for every option (those whose parser default is SUPPRESS carry theirs in the help
    text, see ``_add_field``), descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:  # an optional value with no default: nothing to show
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return " ".join(repr(v) for v in value) if value else "none"
    if isinstance(value, str):
        return repr(value) if value.strip() != value or not value else value
    return str(value)


def _value_type(hint: Any) -> Any:
    """The type a command-line value of an optional field converts to (``int | None`` -> int)."""
    return next(a for a in typing.get_args(hint) if a is not type(None))


def unescaped(value: str) -> str:
    """A command-line value with its backslash escapes decoded, so that ``--force-tokens '\\n'`` is the newline
    that YAML's ``"\\n"`` is (and the job key the same); other text, non-ASCII included, is unchanged."""
    try:
        return value.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as error:
        raise argparse.ArgumentTypeError(f"{value!r}: {error.reason} (write a backslash as \\\\)") from None


def _add_field(group: argparse._ArgumentGroup, name: str, default: Any, kind: Any = None, help_text: str = "",
               choices: tuple | None = None, convert: Any = None) -> None:
    """An option whose parser default is SUPPRESS (so a YAML config can supply it), showing the real one;
    ``convert`` turns each command-line value into the option's (default: ``kind``)."""
    shown = "extractive" if name == "compat" and default is None else _shown_default(default)
    suffix = " (required, here or in --config)" if default == "" else f" (default: {shown})"
    escaped = (help_text + suffix).replace("%", "%%")
    common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": escaped}
    if kind is None:
        kind = type(default)
    if kind is bool:
        group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **common)
    elif kind in (list, tuple):
        group.add_argument(_flag(name), nargs="*", metavar="VALUE", type=convert, **common)
    elif kind is dict:
        return
    elif name in _METAVARS:
        group.add_argument(_flag(name), type=convert or kind, metavar=_METAVARS[name], **common)
    else:
        group.add_argument(_flag(name), type=convert or kind, choices=choices, **common)


def add_compress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with any of the options below (command-line options win)")
    parser.add_argument("--quiet", action="store_true",
                        help="no log lines (this process, Ray and transformers): only the summary and errors")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what a run would compress, keep and retire now, and write nothing")
    job = parser.add_argument_group("job")
    job_hints = typing.get_type_hints(JobConfig)
    for f in dataclasses.fields(JobConfig):
        if f.name == "compression":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = _value_type(job_hints[f.name]) if default is None else type(default)
        _add_field(job, f.name, default, kind, f.metadata.get("help", ""), f.metadata.get("choices"))
    options = parser.add_argument_group("compression options (those of Compressor.compress)")
    for f in dataclasses.fields(CompressionOptions):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = _OPTION_HELP.get(f.name, f.name.replace("_", " "))
        if f.name == "force_context_ids":
            options.add_argument(_flag(f.name), dest=f.name, nargs="*", type=int, default=argparse.SUPPRESS,
                                 metavar="INDEX", help=f"{help_text} (default: none)")
            continue
        escaped = f.name in _ESCAPED_OPTIONS
        _add_field(options, f.name, default, type(default), help_text + (_ESCAPES_HELP if escaped else ""),
                   _OPTION_CHOICES.get(f.name), unescaped if escaped else None)


def load_config_file(path: str) -> dict[str, Any]:
    import fsspec
    import yaml

    try:
        with fsspec.open(path, "r", encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from error
    except UnicodeDecodeError as error:
        raise JobConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not isinstance(loaded, dict):
        raise JobConfigError(f"{path}: a job config must be a YAML mapping")
    return loaded


# options of the command itself, not of the job (JobConfig has no field for them)
CLI_ONLY_OPTIONS = ("config", "quiet", "json", "dry_run")


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """YAML config (if any), then every option given on the command line on top."""
    mapping: dict[str, Any] = load_config_file(args.config) if getattr(args, "config", None) else {}
    given = {k: v for k, v in vars(args).items() if k not in (*CLI_ONLY_OPTIONS, "command", "handler")}
    for key, value in given.items():  # moved last: from_mapping applies keys in order, so these win (over compression:)
        mapping.pop(key, None)
        mapping[key] = value
    config = JobConfig.from_mapping(mapping)
    config.validate()
    return config


def _say(prog: str, text: str) -> None:
    print(f"{prog}: {text}", file=sys.stderr)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def failure_cause(error: BaseException) -> str:
    """The innermost failure as one line: through ``raise ... from`` chains and Ray's task errors
    (``.cause``), past Ray Data's empty marker exceptions; for a Ray error that carries the remote
    traceback as text (an actor that died in its constructor), that traceback's last line."""
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        inner = getattr(current, "cause", None)
        # through suppressed contexts too: the job hides raw storage errors (`from None`), but their message is
        # the cause an operator needs; the caller redacts it
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    deepest = next((e for e in reversed(chain) if str(e).strip()), error)
    lines = [line.strip() for line in _plain(str(deepest)).splitlines() if line.strip()]
    if len(lines) > 1:  # a remote traceback: its last line is "ExceptionType: message"
        return lines[-1]
    return f"{type(deepest).__name__}: {lines[0] if lines else ''}"


def _report_failure(prog: str, error: BaseException, config: JobConfig) -> tuple[str, str]:
    """The traceback (a log record: not with --quiet), then the job's message, then the cause, whole, as
    the last line of the output; every secret of the job's URIs and credentials redacted. Returns the
    message and the cause."""
    import traceback

    from .pipeline.job import job_redactor

    redact = job_redactor(config)
    logging.getLogger("lingua2_batch.cli").info("the job failed:\n%s", redact("".join(traceback.format_exception(error))))
    import ray

    if ray.is_initialized():  # Ray's log forwarding stops here, so nothing prints after the cause
        ray.shutdown()
    text = redact(_plain(str(error)).strip())
    message, cause = text.splitlines()[0] if text else type(error).__name__, redact(failure_cause(error))
    _say(prog, f"job failed: {message}")
    _say(prog, f"cause: {cause}")
    return message, cause


def _finish_report(prog: str, output: str) -> str | None:
    """Render the run's HTML report; a failure to render never fails the run."""
    from .pipeline.report import render_report

    try:
        return render_report(output)
    except Exception as error:  # noqa: BLE001 - the report is a by-product
        _say(prog, f"warning: could not write the run report: {type(error).__name__}: {error}")
        return None


def _print_summary(summary: dict[str, Any], as_json: bool, report: str | None = None) -> None:
    from .pipeline.summary_text import format_summary

    print(json.dumps(summary, indent=2, default=str) if as_json else format_summary(summary, report))


def _print_dry_run(config: JobConfig, as_json: bool) -> int:
    from .pipeline.job import dry_run
    from .pipeline.summary_text import format_dry_run

    plan = dry_run(config)
    print(json.dumps(plan, indent=2) if as_json else format_dry_run(plan))
    return EXIT_OK


def quiet_libraries() -> None:
    """``--quiet``: Ray's and Ray Data's terminal log handlers and transformers log errors only (their log
    files keep everything); no progress bars. The environment reaches the processes of a Ray started here."""
    import ray.data  # noqa: F401 - Ray and Ray Data install their log handlers on import: lower them after

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    for name in ("ray", "ray.data", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)


def _run_record(config: JobConfig, status: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    """What ``--summary-path`` holds while this run works ("running") and when it ends without the job's
    summary (failed, interrupted): the status and why, as ``_summary.json`` says them."""
    from .storage.redact import redact_uri

    return {"status": status, "error": error, **extra, "input": redact_uri(config.input),
            "output": redact_uri(config.output), "model": redact_uri(config.model)}


def _write_summary_file(prog: str, path: str, summary: dict[str, Any]) -> bool:
    """``--summary-path``, replaced whole (a scheduler may read it at any moment), its folders created;
    a failure is said in one line and returns False."""
    from .storage.fs import resolve, write_json

    try:
        target = resolve(path)  # a local file (the pre-start check refuses URIs): ~ expanded, made absolute
        write_json(target.fs, target.path, summary)
        return True
    except OSError as error:
        _say(prog, f"could not write --summary-path {path}: {error.strerror or error}")
        return False


def _invalid(prog: str, error: BaseException) -> str:
    message = f"invalid configuration: {' '.join(str(error).split())}"
    _say(prog, message)
    return message


def run_compress(args: argparse.Namespace, prog: str = "lingua2-batch compress") -> int:
    """``compress``; ``prog`` prefixes every message (the entry point's name)."""
    from .pipeline.preflight import check_before_start, check_summary_path

    try:
        config = config_from_args(args)
        check_summary_path(config.summary_path)
    except (JobConfigError, OSError) as error:
        _invalid(prog, error)
        return EXIT_INVALID

    def record(summary: dict[str, Any]) -> bool:
        """From the first check on, --summary-path describes this run, never a previous one (a dry run
        writes nothing)."""
        return args.dry_run or not config.summary_path or _write_summary_file(prog, config.summary_path, summary)

    if not record(_run_record(config, "running")):
        return EXIT_INVALID
    try:
        check_before_start(config)
    except (JobConfigError, OSError) as error:
        record(_run_record(config, "failed", _invalid(prog, error)))
        return EXIT_INVALID
    if args.quiet:
        quiet_libraries()
    from .pipeline import InputError, run_job
    from .pipeline.interrupts import RESUME_HINT, exit_code, interrupt_signal, sigterm_interrupts

    try:
        if args.dry_run:
            return _print_dry_run(config, args.json)
        # stdout is the summary alone (a --json reader parses it): what Ray prints there while the job runs
        # (its workers' output, "Task ... failed, retrying" notices) goes to stderr with the logs
        with sigterm_interrupts(), contextlib.redirect_stdout(sys.stderr):
            result = run_job(config)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the job recorded status "interrupted"
        message = f"interrupted by {interrupt_signal(interrupt)}; {RESUME_HINT}"
        _say(prog, message)
        record(_run_record(config, "interrupted", message))
        return exit_code(interrupt)
    except InputError as error:
        _say(prog, str(error))
        record(_run_record(config, "failed", str(error)))
        return EXIT_INVALID
    except JobConfigError as error:  # e.g. the cluster has no GPU for --num-gpus 1
        record(_run_record(config, "failed", _invalid(prog, error)))
        return EXIT_INVALID
    except Exception as error:  # noqa: BLE001 - JobError or anything unexpected: exit 1, the cause last
        message, cause = _report_failure(prog, error, config)
        record(_run_record(config, "failed", message, cause=cause))
        return EXIT_FAILED
    report = _finish_report(prog, config.output)
    _print_summary(result.summary, args.json, report)
    if not record(result.summary):
        return EXIT_FAILED
    if result.unaccounted or result.summary["status"] != "succeeded":
        _say(prog, f"{result.unaccounted} rows unaccounted for")
        return EXIT_FAILED
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    from .pipeline.demo import run_demo as demo

    if args.quiet:
        quiet_libraries()
    return demo(args.workdir, keep_output=args.keep_output, as_json=args.json)


def run_report(args: argparse.Namespace) -> int:
    from .pipeline.report import ReportError, load_run, render_report, report_text
    from .storage.redact import redact_uri

    try:
        if args.print:
            print(report_text(load_run(args.output)))
        else:
            print(render_report(args.output))
    except (ReportError, OSError, ValueError) as error:
        _say("lingua2-batch report", " ".join(str(error).split()))
        return EXIT_INVALID
    except Exception as error:  # the object store refused (no credentials, no such bucket): one line, not a trace
        if not type(error).__module__.startswith(("botocore", "aiobotocore")):
            raise
        _say("lingua2-batch report", f"could not read {redact_uri(args.output)}: {type(error).__name__}: "
                                     + " ".join(str(error).split()))
        return EXIT_FAILED
    return EXIT_OK


def run_bench_job(args: argparse.Namespace) -> int:
    from .pipeline.bench import bench_job

    result = bench_job(rows=args.rows, repeats=args.repeats, workdir=args.workdir, model=args.model,
                       device=args.device, dtype=args.dtype, replica_counts=args.replicas,
                       concurrencies=args.concurrency)
    for line in result["lines"]:
        print(json.dumps(line))
    return EXIT_OK


def run_bench_incremental(args: argparse.Namespace) -> int:
    from .pipeline.bench import bench_incremental

    for line in bench_incremental(rows=args.rows, files=args.files, changed_share=args.changed_share,
                                  workdir=args.workdir):
        print(json.dumps(line))
    return EXIT_OK


EXIT_CODES_HELP = ("Exit codes: 0 success; 1 the job failed or rows are unaccounted for; 2 invalid configuration "
                   "or input.")
COMPRESS_DESCRIPTION = ("Compress a Parquet corpus with a Ray job. Prints a summary and writes _summary.json and "
                        "_report.html under --output.")


def build_parser(prog: str = "lingua2-batch") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="LLMLingua-2 prompt compression at corpus scale.",
                    epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    compress = subparsers.add_parser("compress", help="compress a Parquet corpus with a Ray job",
                                     description=COMPRESS_DESCRIPTION)
    add_compress_arguments(compress)
    compress.set_defaults(handler=functools.partial(run_compress, prog=compress.prog))
    demo = subparsers.add_parser("demo", help="run the job locally on the shipped corpus with a scratch model",
                                 description="Run the whole job on this machine, offline: a scratch checkpoint, "
                                             "the shipped corpus as Parquet, a local Ray.")
    demo.add_argument("--workdir", default=None, help="where the demo keeps model, corpus and output "
                                                       "(unset: ~/.cache/lingua2_batch/demo)")
    demo.add_argument("--keep-output", action="store_true", help="reuse a previous demo output (the rerun skips work)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    demo.add_argument("--quiet", action="store_true", help="no log lines from Ray and transformers")
    demo.set_defaults(handler=run_demo)
    report = subparsers.add_parser("report", help="re-render or print the report of a past run",
                                   description="Re-render OUTPUT/_report.html from the run's _summary.json and "
                                               "manifest (local or s3://), or print the report as text.")
    report.add_argument("output", help="the run's output prefix (the job's --output)")
    report.add_argument("--print", action="store_true", help="print the report as text instead of writing HTML")
    report.set_defaults(handler=run_report)
    bench = subparsers.add_parser("bench-job", help="Ray job throughput vs in-process compress_batch",
                                  description="Time in-process compress_batch, then the Ray job over the same "
                                              "rows on a local Ray; prints JSON lines.")
    bench.add_argument("--rows", type=int, default=360, help="rows compressed by each side")
    bench.add_argument("--repeats", type=int, default=1, help="timed passes per side")
    bench.add_argument("--workdir", default=None, help="folder for model, corpus and output (unset: a temporary one)")
    bench.add_argument("--model", default=None, help="checkpoint folder (unset: the small scratch checkpoint)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="where both sides score; cuda gives the replica the one GPU")
    bench.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                       help="model precision on both sides (unset: the scorer's default for the device)")
    from .pipeline.bench import positive_int_list

    bench.add_argument("--replicas", type=positive_int_list, default="1",
                       help="replica counts to run the job with, comma-separated (e.g. 1,2): on CUDA they share "
                            "the one GPU (num_gpus 1/N each), on CPU they split the cores")
    bench.add_argument("--concurrency", type=positive_int_list, default=(None,),
                       help="units each replica works on at once (replica_concurrency), comma-separated values "
                            "to compare (default: the job's own: 2 on a GPU or on >= 2 CPUs)")
    bench.set_defaults(handler=run_bench_job)
    incremental = subparsers.add_parser("bench-incremental",
                                        help="a nightly run's cost: full run, unchanged rerun, 1%% changed rerun",
                                        description="A nightly run's cost on a local Ray: full run, unchanged "
                                                    "rerun (no model work), incremental rerun after a share of the "
                                                    "texts changed; prints JSON lines.")
    incremental.add_argument("--rows", type=int, default=10_000, help="rows in the corpus")
    incremental.add_argument("--files", type=int, default=10, help="input Parquet files")
    incremental.add_argument("--changed-share", type=float, default=0.01,
                             help="share of texts changed before the incremental rerun")
    incremental.add_argument("--workdir", default=None, help="folder for model, corpus and output "
                                                              "(unset: a temporary one)")
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


def _log_to_stderr(args: argparse.Namespace) -> None:
    if not getattr(args, "quiet", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=sys.stderr)


def compress_main(argv: Sequence[str] | None = None, prog: str = "compress_corpus.py") -> int:
    """``compress`` as a program of its own (``jobs/compress_corpus.py``, what ``ray job submit`` runs): its
    usage and every message carry ``prog``, the name it was started by."""
    parser = Parser(prog=prog, description=COMPRESS_DESCRIPTION, epilog=EXIT_CODES_HELP)
    add_compress_arguments(parser)
    args = parser.parse_args(argv)
    _log_to_stderr(args)
    return run_compress(args, prog)


def main(argv: Sequence[str] | None = None, prog: str = "lingua2-batch") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _log_to_stderr(args)
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
