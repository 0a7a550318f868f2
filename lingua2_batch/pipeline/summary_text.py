"""The job summary (``_summary.json``, built by ``job.build_summary``) as text a person reads at the end
of a run. Pure functions of the summary dict: no I/O, so the CLI, the demo and ``lingua2-batch report``
print the same thing for a run that just finished and for one read back from storage."""

from __future__ import annotations

from typing import Any, Mapping


def _count(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) else "?"


def _ratio(value: Any) -> str:
    return f"{float(value):.2f}x" if isinstance(value, (int, float)) else "n/a"


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _rate(value: Any, unit: str) -> str | None:
    return f"{value:,.1f} {unit}/s" if isinstance(value, (int, float)) and value > 0 else None


def errors_text(errors_by_kind: Mapping[str, Any]) -> str:
    """``empty_text 2, too_large 1`` (most frequent first), or ``none``."""
    ordered = sorted(errors_by_kind.items(), key=lambda item: (-int(item[1]), item[0]))
    return ", ".join(f"{kind} {int(count):,}" for kind, count in ordered) or "none"


def is_noop_rerun(summary: Mapping[str, Any]) -> bool:
    """A successful run that found every input file already committed and did no model work."""
    files = summary.get("files") or {}
    total = files.get("total")
    return (summary.get("status") == "succeeded" and not summary.get("model_work")
            and bool(total) and files.get("skipped_already_done") == total and not summary.get("parts_retired"))


def format_summary(summary: Mapping[str, Any], report: str | None = None, brief_noop: bool = True) -> str:
    """A few aligned lines: outcome and time, output location, rows, files, tokens and ratio, the per-record
    ratio's p10/p50/p90, throughput. A rerun with nothing left to do is one line (unless ``brief_noop`` is
    false, as in the run report). ``report`` is where the HTML run report was written, when it was."""
    status = summary.get("status", "unknown")
    output = summary.get("output", "?")
    rows = summary.get("rows") or {}
    files = summary.get("files") or {}
    tokens = summary.get("tokens") or {}
    if brief_noop and is_noop_rerun(summary):
        return (f"nothing to do: all {_count(files.get('total'))} input files are already compressed with this model "
                f"and these options ({_count(rows.get('written'))} rows, overall ratio "
                f"{_ratio(tokens.get('overall_ratio'))}) in {output}")
    outcome = {"succeeded": "succeeded", "failed": "FAILED"}.get(status, status)
    lines = [f"{outcome} in {_seconds(summary.get('time_s'))}" + (f": {summary['error']}" if summary.get("error") else "")]
    notes = [f"scored in {summary['precision']}"] if summary.get("precision", "float32") != "float32" else []
    notes += [f"report: {report}"] if report else []
    lines.append(f"output      {output}" + (f"  ({', '.join(notes)})" if notes else ""))
    unaccounted = int(rows.get("unaccounted") or 0)
    lines.append(
        f"rows        {_count(rows.get('read'))} read, {_count(rows.get('written'))} written"
        f" ({_count(rows['processed_this_run'] - int(rows.get('carried_over') or 0))} compressed this run, "
        f"{_count(rows.get('carried_over'))} carried over)"
        + (f", {unaccounted:,} UNACCOUNTED FOR" if unaccounted else "")
    )
    lines.append(f"errors      {_count(rows.get('errored'))} rows: {errors_text(rows.get('errors_by_kind') or {})}")
    processed = files.get("processed_this_run")
    lines.append(
        f"files       {_count(files.get('total'))} input files: {_count(files.get('committed'))} committed"
        + (f" ({_count(processed)} this run, {_count(files.get('skipped_already_done'))} already done)"
           if processed is not None else f" ({_count(files.get('skipped_already_done'))} already done)")
    )
    lines.append(
        f"tokens      {_count(tokens.get('origin'))} in -> {_count(tokens.get('compressed'))} out, "
        f"overall ratio {_ratio(tokens.get('overall_ratio'))}"
    )
    quantiles = (summary.get("ratio_per_record") or {}).get("this_run")
    if quantiles:
        lines.append(f"per record  ratio p10 {_ratio(quantiles.get('p10'))}, p50 {_ratio(quantiles.get('p50'))}, "
                     f"p90 {_ratio(quantiles.get('p90'))} (records of the parts written this run)")
    if summary.get("parts_retired"):
        lines.append(f"retired     {_count(summary['parts_retired'])} parts of inputs that are gone or were cut anew")
    throughput = summary.get("throughput") or {}
    speeds = [s for s in (_rate(throughput.get("rows_per_s"), "rows"),
                          _rate(throughput.get("origin_tokens_per_s"), "tokens")) if s]
    ready = summary.get("replicas_ready_s") or []
    started = int(summary.get("replicas_started") or len(ready))
    if speeds:
        lines.append("throughput  " + ", ".join(speeds)
                     + (f" ({started} scoring replica{'s' if started != 1 else ''}, the first ready after "
                        f"{ready[0]:.1f} s)" if ready else ""))
    return "\n".join(lines)


def _replicas(plan: Mapping[str, Any]) -> str:
    count, gpus = plan["replicas_to_start"], plan.get("gpus_per_replica")
    if not count:
        return "no scoring replica needed"
    each = "GPUs as the cluster has them" if gpus is None else f"{gpus:g} GPU"
    return f"{count} scoring replica{'s' if count != 1 else ''} to start ({each} each)"


def format_dry_run(plan: Mapping[str, Any]) -> str:
    """A few aligned lines from ``pipeline.job.dry_run``: what a run would compress, keep and retire."""
    files, units, rows = plan["files"], plan["units"], plan["rows"]
    lines = ["dry run: nothing was written",
             f"input       {plan['input']}: {_count(files['total'])} files, {_count(units['total'])} units, "
             f"{_count(rows['total'])} rows" + (f" ({files['skipped_inputs']:,} skipped by rule)"
                                               if files["skipped_inputs"] else ""),
             f"output      {plan['output']}: {_count(units['current'])} units current, "
             f"{_count(units['to_compress'])} to compress ({_count(rows['to_compress'])} rows in "
             f"{_count(files['to_compress'])} files), {_count(plan['parts_to_retire'])} parts to retire",
             f"scoring     {plan['precision']}, job key {plan['job_key']}, {_replicas(plan)}"]
    if plan.get("files_with_previous_parts") is not None:
        lines.append(f"incremental previous parts for {_count(plan['files_with_previous_parts'])} input files: "
                     "unchanged records are carried over")
    lease = plan.get("lease")
    if lease:
        verdict = ("expired: a run now would take it over" if lease.get("expired")
                   else "--break-lease: a run now would take it over" if lease.get("break_lease")
                   else "a run now would be refused")
        lines.append(f"lease       held by run {lease.get('run_id')} on {lease.get('host')} until {lease.get('expires')}: "
                     f"{verdict}")
    return "\n".join(lines)
