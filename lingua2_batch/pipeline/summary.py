"""The run's summary (``_summary.json``, ``_SUCCESS``, the CLI's JSON), built from manifest entries alone:
what the output holds now (every current part, whichever run committed it) and what this run did."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.precision import PRECISION_LABELS
from ..storage.redact import redact_uri
from .output import RATIO_BINS, merge_quantiles

if TYPE_CHECKING:
    from .job import RunPlan


def build_summary(plan: "RunPlan", *, committed_now: dict[str, dict], status: str, model_work: bool,
                  error: str | None = None, parts_retired: int = 0) -> dict[str, Any]:
    config = plan.config
    entries = {**plan.entries, **committed_now}
    current = [entries[u.name] for u in plan.units if u.name in entries and (u.name in plan.done or u.name in committed_now)]
    this_run = list(committed_now.values())
    rows_read = sum(f.rows for f in plan.files)
    written = sum(int(e["rows"]) for e in current)
    kinds: dict[str, int] = {}
    for entry in current:
        for kind, count in entry.get("errors_by_kind", {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(count)
    origin = sum(int(e["origin_tokens"]) for e in current)
    compressed = sum(int(e["compressed_tokens"]) for e in current)
    histogram = np.sum([e["ratio_histogram"] for e in current], axis=0).astype(int).tolist() if current else []
    elapsed = time.time() - plan.started
    rows_this_run = sum(int(e["rows"]) for e in this_run)
    carried = sum(int(e.get("rows_carried", 0)) for e in this_run)
    # what the model did this run: the parts' rows and tokens less those carried over from the previous output
    compressed_this_run = rows_this_run - carried
    origin_this_run = sum(int(e["origin_tokens"]) - int(e.get("origin_tokens_carried", 0)) for e in this_run)
    all_files = {u.file.relative for u in plan.units}
    files_done = all_files - {u.file.relative for u in plan.units if u.name not in plan.done and u.name not in committed_now}
    files_skipped = all_files - {u.file.relative for u in plan.units if u.name not in plan.done}
    return {
        "status": status,
        "error": error,
        "run_id": plan.run_id,
        "input": redact_uri(config.input),
        "output": redact_uri(config.output),
        "model": redact_uri(config.model),
        "model_identity": plan.identity,
        "compat": config.compat or "extractive",
        "precision": PRECISION_LABELS[plan.scoring_dtype],
        "options": config.options().to_dict(),
        "job_key": plan.key,
        "files": {"total": len(plan.files), "committed": len(files_done), "skipped_already_done": len(files_skipped),
                  "processed_this_run": len(files_done) - len(files_skipped) if status == "succeeded" else None},
        "units": {"total": len(plan.units), "committed": len(current), "skipped_already_done": len(plan.done),
                  "processed_this_run": len(this_run)},
        "skipped_inputs": [{"name": name, "why": why} for name, why in plan.skipped_inputs],
        "rows": {
            "read": rows_read, "written": written, "unaccounted": rows_read - written,
            "errored": sum(int(e["rows_errored"]) for e in current), "errors_by_kind": kinds,
            "processed_this_run": rows_this_run, "carried_over": carried, "compressed_this_run": compressed_this_run,
        },
        "parts_retired": parts_retired,  # parts of inputs that are gone (or units cut anew), removed this run
        "tokens": {"origin": origin, "compressed": compressed,
                   "overall_ratio": (origin / compressed) if compressed else None},
        "ratio_per_record": {"histogram_upper_edges": RATIO_BINS + ["inf"], "histogram": histogram,
                             "this_run": merge_quantiles(e.get("ratio_quantiles") for e in this_run)},
        "time_s": round(elapsed, 3),
        "throughput": {"rows_per_s": compressed_this_run / elapsed if elapsed > 0 else None,
                       "origin_tokens_per_s": origin_this_run / elapsed if model_work and elapsed > 0 else None},
        "model_work": model_work,
        # when each scoring replica had loaded its model: a job's fixed start-up cost, apart from its throughput
        "replicas_started": plan.replicas_started,
        "replicas_ready_s": list(plan.replicas_ready_s),
        "retries": plan.retries,
    }
