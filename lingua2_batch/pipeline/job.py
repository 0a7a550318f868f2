"""The compression job, driver side: plan → execute → commit. The driver handles metadata only (the plan,
references to work in flight, per-unit manifest entries, the summary); records flow between workers.

1. plan (``plan_run``): list the input by the one listing rule, read the footers, check columns, cut units;
   take the output's lease, refuse another job's output unless ``overwrite``; decide which units are done.
2. check with Ray: the cluster can hold a replica; start the replicas (their models load meanwhile); check
   the ids (distributed). Nothing in the output has changed until here.
3. execute: per unit, ``prepare_unit`` (CPU task) → ``Replica.score`` (actor, the records to score only)
   → ``commit_unit`` (CPU task: part + manifest entry), with bounded work in flight; a unit with nothing to
   score (every row carried over) skips the replicas, and does not wait for one to load its model.
   CPU replicas prepare their own units (``Replica.prepare_and_score``) unless ``prepare_in: tasks``.
4. commit: retire outputs of inputs that are gone, then ``_manifest.json``, ``_summary.json``, ``_SUCCESS``;
   release the lease.

What is retried, and by whom:
* prepare and commit tasks: Ray re-runs a task whose worker died, and one that raised (an unreachable
  object store), up to ``max_task_retries`` times; a task's storage calls also retry for ``io_retry_seconds``;
* scoring replicas: restarted without limit after a crash (``max_restarts=-1``), the interrupted unit re-sent
  up to ``max_task_retries`` times; replicas on a lost node are re-created elsewhere;
* the driver itself: rerun the same command; committed units are skipped, the rest redone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..model.precision import PRECISION_LABELS, scoring_dtype
from ..storage.fs import Location, has_parquet_suffix, resolve, without_query
from ..storage.hf_datasets import SavedDatasetError, convert_saved_dataset, is_saved_dataset
from ..storage.models import model_identity
from ..storage.redact import Redactor, redact_uri
from ..storage.retry import with_retries
from . import stages
from .columns import family, plain_type
from .config import JobConfig
from .errors import AccountingError, InputError, JobError, LeaseHeldError
from .idcheck import check_ids
from .interrupts import RESUME_HINT, interrupt_signal, keeping_sigterm_handler
from .lease import LEASE, Lease
from .output import FULL_MANIFEST, SUCCESS, SUMMARY, Manifest
from .plan import InputFile, Unit, expand_passthrough, inspect_inputs, list_inputs, plan_units
from .progress import Progress
from .summary import build_summary

log = logging.getLogger("lingua2_batch.job")
CONVERTED_INPUT_DIR = ".input_parquet"  # hidden: no reader of the output prefix ever sees it

__all__ = ["AccountingError", "InputError", "JobError", "JobReport", "LeaseHeldError", "run_job"]


@dataclass
class JobReport:
    summary: dict[str, Any]
    output: str
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def unaccounted(self) -> int:
        return int(self.summary["rows"]["unaccounted"])


@dataclass
class RunPlan:
    config: JobConfig
    run_id: str
    started: float
    key: str
    identity: str
    scoring_dtype: str  # what the replicas score in (float32, bfloat16, ...): part of the key when reduced
    replica_gpus: float | None  # GPUs per scoring replica; None until the cluster is asked (when it decides)
    input_location: Location  # where units are read (the input, or its Parquet conversion)
    output: Location
    manifest: Manifest
    files: list[InputFile]
    skipped_inputs: list[tuple[str, str]]
    units: list[Unit]
    entries: dict[str, dict]  # existing manifest entries, by part name
    done: set[str]  # part names already committed for the current plan
    present: set[str]  # data files in the output prefix when the plan was made
    schema: pa.Schema  # of every output part
    previous: tuple[str, dict[str, list[str]]] | None  # incremental: previous output, its parts per input
    retries: dict[str, Any] = field(default_factory=dict)
    gcs_address: str = ""  # of the cluster the job runs on, once connected
    committed_now: dict[str, dict] = field(default_factory=dict)  # entries this run committed, as they come
    replicas_started: int = 0  # scoring replicas this run asked Ray for
    replicas_ready_s: list[float] = field(default_factory=list)  # seconds from the job's start, per replica ready

    @property
    def todo(self) -> list[Unit]:
        return [u for u in self.units if u.name not in self.done]

    @property
    def work(self) -> list[Unit]:
        """The units to do that hold rows: the workers' share (an empty unit is committed by the driver)."""
        return [u for u in self.todo if u.rows]


def _output_schema(config: JobConfig, files: list[InputFile]) -> pa.Schema:
    fields: list[pa.Field] = []
    kept = ([config.id_column] if config.id_column else []) + ([config.text_column] if config.keep_text else [])
    for column in kept + list(config.passthrough_columns):
        dtype = next((f.schema.field(column).type for f in files if not pa.types.is_null(f.schema.field(column).type)),
                     pa.string())
        fields.append(pa.field(column, dtype))
    fields += [pa.field(name, dtype) for name, dtype in stages.result_schema(config.include_word_labels)]
    fields += [pa.field("error", pa.string()), pa.field("content_hash", pa.string())]
    return pa.schema(fields)


def _parquet_input(config: JobConfig, location: Location, output: Location, convert: bool = True) -> Location:
    """The input as Parquet files: as given, or a ``save_to_disk`` dataset's shards converted once under
    the output prefix (``.input_parquet/``, hidden from every Parquet reader; ``convert=False``: only if
    converted already). A path that names a Parquet file (a presigned URL included) is Parquet whatever
    ``input_format`` says."""
    if config.input_format == "parquet" or has_parquet_suffix(without_query(location.fs, location.path)):
        return location
    saved = is_saved_dataset(location)
    if config.input_format == "auto" and not saved:
        return location
    if not saved:
        raise InputError(f"{redact_uri(config.input)}: not a dataset saved with save_to_disk (no state.json)")
    try:
        return with_retries(lambda: convert_saved_dataset(location, output.child(CONVERTED_INPUT_DIR), convert),
                            "converting the saved dataset to Parquet", config.io_retry_seconds)
    except SavedDatasetError as error:
        raise InputError(str(error)) from error


def _unit_done(plan_key: str, identity: str, unit: Unit, entry: dict | None, present: set[str]) -> bool:
    return bool(entry) and entry.get("job_key") == plan_key and entry.get("model_identity") == identity \
        and entry.get("input") == unit.file.uri and entry.get("input_fingerprint") == unit.file.fingerprint \
        and entry.get("unit") == unit.describe() and unit.name in present


def input_root(uri: str) -> str:
    """The input as entries record it: one spelling for one location (``corpus/``, ``./corpus``, the absolute
    path and ``file://`` are the same input), credentials redacted."""
    location = resolve(uri)
    return redact_uri(location.to_uri(location.path))


def _same_input(recorded: str, current_root: str) -> bool:
    try:
        return input_root(recorded) == current_root  # entries of older versions recorded the input as given
    except Exception:  # noqa: BLE001 - a recorded URI no filesystem takes now is not this input
        return False


def _guard_overwrite(config: JobConfig, entries: dict[str, dict], key: str, input_uri: str, dtype: str) -> None:
    """An output holding another job's parts (other options, or another input) is only replaced when asked."""
    if config.overwrite or not entries:
        return
    foreign = [e for e in entries.values() if e.get("job_key") != key]
    recorded = {e["input_root"] for e in entries.values() if e.get("input_root") is not None}
    other = {root for root in recorded if not _same_input(root, input_uri)}
    other_input = [e for e in entries.values() if e.get("input_root") in other]
    if foreign or other_input:
        example = (foreign or other_input)[0]
        theirs, ours = example.get("precision"), PRECISION_LABELS[dtype]  # None: written before outputs said it
        precision = f"; scored in {theirs}, this run would score in {ours}" if theirs not in (None, ours) else ""
        why = (f"other options or another output layout (job key {example.get('job_key')} vs {key}{precision})"
               if foreign else f"another input ({example.get('input_root')})")
        raise InputError(f"output {redact_uri(config.output)} holds the output of a job with {why}; pass --overwrite "
                         "to replace it, or choose another output")


def _same_id_type(recorded: str, current: pa.DataType) -> bool:
    """Whether ids of the type an entry recorded (its name) match ids of ``current``: the same type, or one
    that differs only in encoding (string and large_string; carry-over matches them in their plain form)."""
    if recorded == str(current):
        return True
    try:
        return family(pa.type_for_alias(recorded)) == family(plain_type(current))
    except ValueError:  # a name type_for_alias does not know (dictionaries, extension types): not the same
        return False


def _check_previous_ids(config: JobConfig, previous: dict[str, dict], schema: pa.Schema) -> None:
    if not config.id_column:
        return
    current = schema.field(config.id_column).type
    mixed = sorted({e["id_type"] for e in previous.values()
                    if e.get("id_type") is not None and not _same_id_type(e["id_type"], current)})
    if mixed:
        raise InputError(f"the previous output's id column {config.id_column!r} has type {mixed[0]} but the input's "
                         f"is {current}: carry-over cannot match them. Rerun without --incremental (or with --overwrite "
                         "and a fresh output)")


def plan_run(config: JobConfig, dry_run: bool = False) -> tuple[RunPlan, Lease | None]:
    """Everything up to the first unit of work: inputs, units, the lease, what is already done.
    ``dry_run``: the same plan, writing nothing (no lease, no conversion of a saved dataset)."""
    started = time.time()
    config.validate()
    gcs_address, replica_gpus = "", config.replica_gpus()
    if replica_gpus is None and config.dtype is None and config.compat is None:
        # extractive mode's default precision is bfloat16 on GPU replicas, and whether they get one is the cluster's
        gcs_address = _connect_ray(config)
        replica_gpus = _replica_gpus_on_cluster(config)
    device = stages.replica_device(config, bool(replica_gpus))
    dtype = scoring_dtype(config.dtype, device.split(":")[0], config.compat)
    in_location, out_location = resolve(config.input), resolve(config.output)
    if in_location.fs.protocol == out_location.fs.protocol and (
        out_location.path == in_location.path or out_location.path.startswith(in_location.path.rstrip("/") + "/")
        or in_location.path.startswith(out_location.path.rstrip("/") + "/")
    ):
        raise InputError(f"output {redact_uri(config.output)} must not be the input {redact_uri(config.input)} or overlap it")
    in_location = _parquet_input(config, in_location, out_location, convert=not dry_run)
    listing = list_inputs(config, in_location)
    files = inspect_inputs(config, in_location, listing)
    config = expand_passthrough(config, files)
    key = config.job_key(dtype)
    units = plan_units(files, int(config.unit_rows), int(config.unit_bytes))
    identity = model_identity(config.model, config.model_revision)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    manifest = Manifest(out_location, config.io_retry_seconds)
    lease = None if dry_run else Lease(out_location, run_id, float(config.lease_ttl_s), config.io_retry_seconds)
    if lease is not None:
        lease.acquire(break_lease=config.break_lease)
    try:
        entries = manifest.load_entries()
        _guard_overwrite(config, entries, key, input_root(config.input), dtype)
        present = set(manifest.data_files())  # what a reader of the prefix would read now
        done = {u.name for u in units if _unit_done(key, identity, u, entries.get(u.name), present)}
        schema = _output_schema(config, files)
        previous = _previous_parts(config, entries, key, identity, schema)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    plan = RunPlan(config, run_id, started, key, identity, dtype, replica_gpus, in_location, out_location, manifest,
                   files, listing.skipped, units, entries, done, present, schema, previous, gcs_address=gcs_address)
    return plan, lease


def _connect_ray(config: JobConfig) -> str:
    """Join the cluster Ray's convention names (``--ray-address``, else RAY_ADDRESS, else a running cluster,
    else a new local one; ``local`` always starts one), or the one this process already joined; log which.
    Returns its GCS address, for the calls that need it named (the state API would otherwise auto-detect).
    When this program's INFO lines are off (``--quiet``), Ray's worker output is not forwarded either."""
    import ray

    verbose = log.isEnabledFor(logging.INFO)
    with keeping_sigterm_handler():
        context = ray.init(address=config.ray_address, ignore_reinit_error=True, log_to_driver=verbose,
                           logging_level=logging.WARNING if verbose else logging.ERROR)
    gcs_address = context.address_info["gcs_address"]
    resources = ray.cluster_resources()
    log.info("Ray: cluster at %s (%d node(s), %g CPU, %g GPU), dashboard %s", gcs_address,
             len([n for n in ray.nodes() if n.get("Alive")]), resources.get("CPU", 0), resources.get("GPU", 0),
             f"http://{context.dashboard_url}" if context.dashboard_url else "not running")
    return gcs_address


def _previous_parts(config: JobConfig, entries: dict[str, dict], key: str, identity: str,
                    schema: pa.Schema) -> tuple[str, dict[str, list[str]]] | None:
    """For incremental runs: the previous output's location and, per input file, its committed parts made
    with the same job key and model. Metadata only; each unit reads what it needs itself."""
    source = config.previous or (config.output if config.incremental else None)
    if not source:
        return None
    location = resolve(source)
    if source != config.output:
        entries = Manifest(location, config.io_retry_seconds).load_entries()
    usable = {name: e for name, e in entries.items() if e.get("job_key") == key and e.get("model_identity") == identity}
    _check_previous_ids(config, usable, schema)
    if not usable:
        log.warning("previous output %s has no part made with the same model and options; nothing carried over",
                    redact_uri(source))
        return None
    by_input: dict[str, list[str]] = {}
    for name, entry in usable.items():
        by_input.setdefault(entry["input"], []).append(location.join(name))
    return location.uri, by_input


def _replica_gpus_on_cluster(config: JobConfig) -> float:
    """GPUs per scoring replica on the cluster this process joined (``JobConfig.replica_gpus``)."""
    import ray

    return config.replica_gpus(ray.cluster_resources().get("GPU", 0))


def _wait_for_cluster(config: JobConfig, replica_gpus: float) -> None:
    """The cluster must be able to hold a scoring replica (GPUs when asked for): judged at once, and again
    every few seconds for up to ``wait_for_resources_s`` while an autoscaler may be adding nodes. An autoscaler
    adds nodes only for demand, and nothing asks for a replica yet: while waiting, the replica's resources are
    requested from it (``ray.autoscaler.sdk.request_resources``), and the request is withdrawn after the wait
    (the replicas, created next, ask for themselves). A precision that cannot run where the replicas will
    (float16 on CPU replicas) fails at once: no node changes that."""
    import ray

    from .preflight import PreflightError, check_cluster, check_replica_precision

    check_replica_precision(config, replica_gpus)
    deadline = time.monotonic() + float(config.wait_for_resources_s)
    asked = False
    try:
        while True:
            try:
                check_cluster(config, ray.cluster_resources(), replica_gpus)
                return
            except PreflightError as error:
                if time.monotonic() >= deadline:
                    raise
                if not asked:
                    asked = _ask_autoscaler([_replica_bundle(config, replica_gpus)])
                log.warning("%s; waiting up to %.0f s for the cluster to grow (--wait-for-resources-s)", error,
                            deadline - time.monotonic())
                time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
    finally:
        if asked:
            _ask_autoscaler([])


def replica_resources(config: JobConfig, replica_gpus: float) -> dict[str, Any]:
    """The resources one scoring replica asks Ray for, as actor options (``num_cpus``, ``num_gpus``, and
    ``resources`` when custom ones are set)."""
    options: dict[str, Any] = {"num_cpus": float(config.score_num_cpus), "num_gpus": float(replica_gpus)}
    if config.replica_resources:
        options["resources"] = {k: float(v) for k, v in config.replica_resources.items()}
    return options


def _replica_bundle(config: JobConfig, replica_gpus: float) -> dict[str, float]:
    """The same resources as a bundle, what the autoscaler is asked to fit."""
    options = replica_resources(config, replica_gpus)
    bundle = {"CPU": options["num_cpus"], **options.get("resources", {})}
    if options["num_gpus"]:
        bundle["GPU"] = options["num_gpus"]
    return bundle


def _ask_autoscaler(bundles: list[dict[str, float]]) -> bool:
    """Ask the cluster's autoscaler to fit ``bundles`` (an empty list withdraws the request). A cluster without
    an autoscaler ignores it. Returns whether the request was made."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
        return True
    except Exception as error:  # noqa: BLE001 - a hint to an autoscaler; the wait goes on without it
        log.warning("could not ask the autoscaler for a scoring replica's resources (%s)", type(error).__name__)
        return False


def check_with_ray(plan: RunPlan, replica_class: type = stages.Replica) -> "ReplicaPool":
    """The checks that need the cluster (its resources, ids across the whole input), before anything changes
    in the output. The scoring replicas are started first, so that their models load during the id check;
    returns them."""
    config = plan.config
    plan.gcs_address = plan.gcs_address or _connect_ray(config)
    if plan.replica_gpus is None:
        plan.replica_gpus = _replica_gpus_on_cluster(config)
    _wait_for_cluster(config, plan.replica_gpus)
    pool = ReplicaPool(plan, replica_class)
    try:
        id_type = plan.schema.field(config.id_column).type if config.id_column else None
        check_ids(config, plan.input_location.uri, plan.units, id_type)
    except BaseException:
        pool.close()
        raise
    return pool


def worker_context(plan: RunPlan) -> stages.WorkerContext:
    """What every worker needs to know of the job, from the plan."""
    config, schema = plan.config, plan.schema
    id_type = schema.field(config.id_column).type if config.id_column else None
    counter = config.token_counter or ""
    return stages.WorkerContext(
        config=config, input_uri=plan.input_location.uri, job_key=plan.key, model_identity=plan.identity,
        token_counter_identity=model_identity(counter[3:]) if counter.startswith("hf:") else counter,
        run_id=plan.run_id, schema=schema, scoring_dtype=plan.scoring_dtype,
        entry_common={"job_key": plan.key, "model_identity": plan.identity, "model": redact_uri(config.model),
                      "precision": PRECISION_LABELS[plan.scoring_dtype],
                      "compat": config.compat or "extractive", "options_fingerprint": config.options().fingerprint(),
                      "run_id": plan.run_id, "input_root": input_root(config.input),
                      "id_type": str(id_type) if id_type is not None else None},
    )


def commit_empty_units(plan: RunPlan) -> None:
    """Units without rows (zero-row files) get their empty part and entry here, with no worker and no Ray."""
    context = worker_context(plan)
    results = [name for name, _ in stages.result_schema(plan.config.include_word_labels)]
    rows = stages.UnitRows(plan.schema.empty_table().drop_columns(results), [], None)
    scored = stages.scored_schema(plan.config.include_word_labels).empty_table()
    for unit in plan.todo:
        if not unit.rows:
            plan.committed_now[unit.name] = stages.commit_unit(context, unit, rows, scored)


class ReplicaPool:
    """The run's scoring actors (``JobConfig.replica_count`` of them) and the job context they share. Creating
    them only asks Ray to place them: each loads its model in the background until ``close``."""

    def __init__(self, plan: RunPlan, replica_class: type = stages.Replica):
        import ray

        config = plan.config
        self.plan = plan
        context = worker_context(plan)
        self.context_ref = ray.put(context)
        num_gpus = plan.replica_gpus
        # A replica may work on several units at once (a threaded actor): while the device scores one, the host
        # selects another's words and takes in the next unit
        concurrency = stages.replica_concurrency(config, stages.replica_device(config, num_gpus > 0))
        actor = ray.remote(replica_class).options(max_restarts=-1, max_task_retries=config.max_task_retries,
                                                  max_concurrency=concurrency,
                                                  **replica_resources(config, num_gpus))
        self.units_in_flight = concurrency + 1  # per replica: one more than it works on, so it never waits
        self.prepare_in_replica = config.prepare_in == "replica" or (config.prepare_in == "auto" and not num_gpus)
        # the context by value (a few kB): a restarted replica's constructor arguments must not live in the object
        # store, where they could be gone by then (Ray logs an ERROR for every replica created from a reference)
        count, self.min_placed = config.replica_count(len(plan.work))
        if count < int(config.max_replicas):
            log.info("starting %d of --max-replicas %d scoring replicas: %d unit(s) to score", count,
                     config.max_replicas, len(plan.work))
        self.replicas = [actor.remote(context, num_gpus > 0) for _ in range(count)]
        plan.replicas_started = count

    def close(self) -> None:
        import ray

        if not self.replicas:
            return
        self.plan.retries = _replica_restarts(self.replicas, self.plan.gcs_address)
        for replica in self.replicas:
            ray.kill(replica)
        self.replicas = []


def execute(plan: RunPlan, lease: Lease, pool: ReplicaPool) -> dict[str, dict]:
    """Run every unit not yet done on the pool's replicas (Ray connected); returns the entries committed by
    this run, by part name."""
    import ray

    config = plan.config
    retry = {"max_retries": config.max_task_retries, "retry_exceptions": True}
    prepare = None if pool.prepare_in_replica else \
        ray.remote(stages.prepare_unit_task).options(num_cpus=config.prepare_num_cpus, num_returns=3, **retry)
    commit = ray.remote(stages.commit_unit).options(num_cpus=config.prepare_num_cpus, **retry)
    return _Scheduler(plan, pool.context_ref, pool.replicas, prepare, commit, lease, pool.units_in_flight,
                      pool.min_placed).run()


def _replica_restarts(replicas: list, gcs_address: str) -> dict[str, Any]:
    """How often this run's replicas were restarted (Ray's state API, asked of the cluster the job runs on)."""
    try:
        from ray.util.state import get_actor

        restarts = 0
        for replica in replicas:
            state = get_actor(replica._actor_id.hex(), address=gcs_address)
            restarts += int(getattr(state, "num_restarts", 0) or 0) if state else 0
        return {"actor_restarts": restarts}
    except Exception as error:  # noqa: BLE001 - the numbers are informative only
        return {"unavailable": type(error).__name__}


class _Scheduler:
    """Keeps every replica fed with prepared units while bounding the prepared units held in the object
    store; hands each scored unit to a commit task. Holds references and small entries, never rows."""

    def __init__(self, plan: RunPlan, context_ref: Any, replicas: list, prepare: Any, commit: Any, lease: Lease,
                 units_in_flight: int = 2, min_placed: int = 1):
        self.plan, self.context_ref, self.replicas = plan, context_ref, replicas
        self.min_placed = min_placed  # replicas that must be placed within wait_for_resources_s
        self.units_in_flight = units_in_flight  # per replica: those it works on, and one queued
        self.prepare, self.commit, self.lease = prepare, commit, lease
        self.progress = Progress(plan.work, plan.config.progress_interval_s)
        self.committed = plan.committed_now

    def _previous_for(self, unit: Unit) -> tuple[str, list[str]] | None:
        if self.plan.previous is None:
            return None
        location, by_input = self.plan.previous
        return location, by_input.get(unit.file.uri, [])

    def _no_replica_placed(self) -> JobError:
        import ray

        config = self.plan.config
        return JobError(
            f"fewer than {self.min_placed} scoring replicas could be placed within "
            f"{config.wait_for_resources_s:.0f} s: each asks for "
            f"{config.num_gpus if config.num_gpus is not None else 'auto'} GPU and {config.score_num_cpus} CPU; "
            f"the cluster has {ray.cluster_resources()}. Lower --num-gpus/--score-num-cpus or add nodes "
            "(--wait-for-resources-s waits longer for an autoscaler)")

    def run(self) -> dict[str, dict]:
        preparing: dict[Any, Unit] = {}
        committing: dict[Any, Unit] = {}
        try:
            return self._run(preparing, committing)
        except BaseException:
            self._stop(preparing, committing)
            raise

    COMMIT_GRACE_S = 30.0

    def _stop(self, preparing: dict[Any, Unit], committing: dict[Any, Unit]) -> None:
        """On the way out (an interrupt, a failure): prepare tasks are cancelled; commit tasks already running
        may finish (they are short, and what they commit is kept), so none writes after the job's cleanup."""
        import ray

        try:
            for ref in preparing:
                ray.cancel(ref)
            if committing:
                done, _ = ray.wait(list(committing), num_returns=len(committing), timeout=self.COMMIT_GRACE_S)
                for ref in done:
                    with contextlib.suppress(Exception):  # a failed commit committed nothing
                        self.committed[committing[ref].name] = ray.get(ref)
        except Exception:  # noqa: BLE001 - Ray itself may be going away; the job's cleanup follows regardless
            log.warning("could not stop the work in flight", exc_info=True)

    def _run(self, preparing: dict[Any, Unit], committing: dict[Any, Unit]) -> dict[str, dict]:
        import ray

        todo = list(reversed(self.plan.work))  # pop() takes units in plan order
        probes = {replica.ready.remote(): index for index, replica in enumerate(self.replicas)}
        ready: set[int] = set()
        waiting_since = time.monotonic()
        max_prepared = max(2, len(self.replicas) * self.units_in_flight + 1)
        # until a replica has loaded its model nothing is scored: let prepares run ahead meanwhile (CPU that
        # would idle; on a rerun that carries most records over, the replica's start is much of the run)
        max_prepared_before_ready = 2 * max_prepared
        prepared: list[tuple[Unit, Any]] = []
        scoring: dict[Any, tuple[Unit, int]] = {}
        unit_rows: dict[str, Any] = {}  # unit name -> its UnitRows ref, until the unit's commit is submitted
        records_of: dict[str, Any] = {}  # unit name -> its PreparedRecords ref, while it is being prepared
        nothing_scored = stages.scored_schema(self.plan.config.include_word_labels).empty_table()
        load = [0] * len(self.replicas)
        while todo or preparing or prepared or scoring or committing:
            while todo and len(preparing) + len(prepared) + len(scoring) < (max_prepared if ready else
                                                                            max_prepared_before_ready):
                unit = todo.pop()
                if self.prepare is None:  # the replica that takes the unit prepares it
                    prepared.append((unit, None))
                    continue
                rows_ref, records_ref, count_ref = self.prepare.remote(self.context_ref, unit,
                                                                       self._previous_for(unit))
                preparing[count_ref] = unit
                records_of[unit.name] = records_ref
                unit_rows[unit.name] = rows_ref  # straight from prepare to commit: replicas never see it
            for index in sorted(ready, key=lambda i: load[i]):
                while prepared and load[index] < self.units_in_flight:
                    unit, ref = prepared.pop(0)
                    replica = self.replicas[index]
                    if ref is None:
                        unit_rows[unit.name], scored = replica.prepare_and_score.options(num_returns=2).remote(
                            self.context_ref, unit, self._previous_for(unit))
                    else:
                        scored = replica.score.remote(self.context_ref, ref)
                    scoring[scored] = (unit, index)
                    load[index] += 1
            # waiting for replicas matters only while some unit has records to score
            if len(ready) < self.min_placed and (prepared or todo or preparing) and \
                    time.monotonic() - waiting_since > self.plan.config.wait_for_resources_s:
                raise self._no_replica_placed()
            pending = list(preparing) + list(scoring) + list(committing) + list(probes)
            finished, _ = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in finished:
                if ref in preparing:
                    unit = preparing.pop(ref)
                    self.progress.unit_prepared(unit)
                    if _records_to_score(ref):
                        prepared.append((unit, records_of.pop(unit.name)))
                        continue
                    records_of.pop(unit.name)
                    self.progress.unit_scored(unit)  # nothing to score: no replica needed
                    committing[self.commit.remote(self.context_ref, unit, unit_rows.pop(unit.name),
                                                  nothing_scored)] = unit
                elif ref in scoring:
                    unit, index = scoring.pop(ref)
                    load[index] -= 1
                    if self.prepare is None:
                        self.progress.unit_prepared(unit)
                    self.progress.unit_scored(unit)
                    # a failed prepare or score reaches here as the commit task's error, after Ray's retries
                    committing[self.commit.remote(self.context_ref, unit, unit_rows.pop(unit.name), ref)] = unit
                elif ref in committing:
                    unit = committing.pop(ref)
                    entry = ray.get(ref)
                    self.committed[unit.name] = entry
                    self.progress.unit_done(unit, entry)
                elif ref in probes:
                    ray.get(ref)  # a replica that cannot load its model raises here, with the cause
                    ready.add(probes.pop(ref))
                    self.plan.replicas_ready_s.append(round(time.time() - self.plan.started, 3))
                    log.info("scoring replica %d/%d ready %.1f s into the job (model loaded)", len(ready),
                             len(self.replicas), self.plan.replicas_ready_s[-1])
            if self.lease.lost:
                raise JobError(self.lease.lost)
            self.progress.maybe_log()
        self.progress.log_final()
        return self.committed


def _records_to_score(count_ref: Any) -> int:
    """A prepare task's record count; a failed prepare counts as one, so its unit takes the usual way and its
    error reaches the driver through the unit's commit, after Ray's retries."""
    import ray

    try:
        return int(ray.get(count_ref))
    except Exception:  # noqa: BLE001 - reported by the commit, as for any unit
        return 1


def job_redactor(config: JobConfig) -> Redactor:
    """Hides the credentials any of the job's URIs carry."""
    return Redactor([config.input, config.output, config.previous, config.model])


def _plan(config: JobConfig, redact: Redactor, dry_run: bool = False) -> tuple[RunPlan, Lease | None]:
    """``plan_run`` with its failures as JobError/InputError whose messages quote no credentials."""
    try:
        return plan_run(config, dry_run)
    except JobError as error:
        raise type(error)(redact(str(error))) from None
    except (FileNotFoundError, PermissionError, ValueError) as error:  # a missing bucket, no access, a bad URI
        raise InputError(redact(f"{type(error).__name__}: {error}")) from None
    except Exception as error:  # noqa: BLE001 - storage clients' errors may quote credentials
        raise JobError(redact(f"planning the job failed: {type(error).__name__}: {error}")) from None


def dry_run(config: JobConfig) -> dict[str, Any]:
    """What a run of ``config`` would do now, found as a run plans (input listing and footers, the output's
    manifest, the same refusals) but writing nothing: no lease, no conversion, no Ray unless the precision
    depends on the cluster's GPUs."""
    plan, _ = _plan(config, job_redactor(config), dry_run=True)
    todo, current = plan.todo, {u.name for u in plan.units}
    holder = plan.manifest.read(LEASE)
    return {
        "dry_run": True,
        "input": redact_uri(config.input),
        "output": redact_uri(config.output),
        "precision": PRECISION_LABELS[plan.scoring_dtype],
        "job_key": plan.key,
        # what a run would ask the cluster for: no replica for a plan without rows to compress
        "replicas_to_start": config.replica_count(len(plan.work))[0] if plan.work else 0,
        "gpus_per_replica": plan.replica_gpus,  # None when the cluster's GPUs would decide
        "files": {"total": len(plan.files), "to_compress": len({u.file.relative for u in todo}),
                  "skipped_inputs": len(plan.skipped_inputs)},
        "units": {"total": len(plan.units), "current": len(plan.done), "to_compress": len(todo)},
        "rows": {"total": sum(u.rows for u in plan.units), "to_compress": sum(u.rows for u in todo)},
        # parts of inputs that are gone or changed: a run removes them from what readers see
        "parts_to_retire": len((plan.present | set(plan.entries)) - current),
        # incremental: the current input files with parts to carry results over from
        "files_with_previous_parts": (len(set(plan.previous[1]) & {f.uri for f in plan.files})
                                      if plan.previous else None),
        "lease": {**{k: holder.get(k) for k in ("run_id", "host", "expires")},
                  "expired": float(holder.get("expires_at", 0)) < time.time(),
                  "break_lease": bool(config.break_lease)} if holder else None,
    }


def run_job(config: JobConfig, replica_class: type = stages.Replica) -> JobReport:
    """Run (or finish) the job described by ``config``. Returns a report whose ``summary`` is also written
    as ``_summary.json`` and ``_SUCCESS`` under the output; raises JobError/InputError when the job cannot
    complete (what was committed before stays committed; a rerun resumes). ``replica_class`` is the scoring
    actor's class (tests pass a subclass that is slow or crashes)."""
    redact = job_redactor(config)
    plan, lease = _plan(config, redact)
    pool: ReplicaPool | None = None
    try:
        running = {"status": "running", "run_id": plan.run_id, "started_at": plan.started, "host": socket.gethostname(),
                   "pid": os.getpid(), "input": redact_uri(config.input), "output": redact_uri(config.output)}
        if not plan.todo and not _stale_outputs(plan):
            summary = build_summary(plan, committed_now={}, status="succeeded", model_work=False)
            success = plan.manifest.read(SUCCESS)
            if not success or success.get("job_key") != plan.key or success.get("rows") != summary["rows"]:
                plan.manifest.commit_job(_current_entries(plan, {}), summary)
            return JobReport(summary, redact_uri(config.output))
        if plan.work:
            pool = check_with_ray(plan, replica_class)
        plan.manifest.write(SUMMARY, running)
        plan.manifest.remove(SUCCESS)
        plan.manifest.clear_staging()
        committed = plan.committed_now  # filled by execute as units commit, also when it raises
        try:
            commit_empty_units(plan)
            if plan.work:
                try:
                    execute(plan, lease, pool)
                finally:
                    pool.close()  # before the summary: it reports the replicas' restarts
            lease.check()
            entries = _current_entries(plan, committed)
            missing = [u.name for u in plan.units if u.name not in entries]
            if missing:
                raise AccountingError(f"units not committed: {missing[:10]}")
            retired = plan.manifest.retire({u.name for u in plan.units}, {**plan.entries, **committed})
            summary = build_summary(plan, committed_now=committed, status="succeeded", model_work=bool(plan.work),
                                    parts_retired=len(retired))
            if summary["rows"]["unaccounted"]:
                raise AccountingError(f"{summary['rows']['unaccounted']} rows unaccounted for")
            lease.check()
            plan.manifest.commit_job(entries, summary)
            plan.manifest.clear_staging()
            return JobReport(summary, redact_uri(config.output))
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM as interrupts.Terminated
                status, message = "interrupted", f"interrupted by {interrupt_signal(error)}; {RESUME_HINT}"
            else:
                status, message = "failed", redact(f"{type(error).__name__}: {str(error)[:2000]}")
                if not isinstance(error, JobError):  # unforeseen: where it came from is what an operator needs
                    log.error("the job failed:\n%s", redact("".join(traceback.format_exception(error))))
            summary = build_summary(plan, committed_now=committed, status=status, model_work=True, error=message)
            _write_quietly(plan, summary, lease)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            if lease.lost:  # whatever failed first (a commit task, the scheduler), this is the cause
                raise JobError(redact(lease.lost)) from None
            if isinstance(error, JobError):
                raise type(error)(redact(str(error))) from None
            raise JobError(f"the job failed: {message}. Committed units are kept; rerun the same command to "
                           "finish the rest.") from None
    finally:
        if pool is not None:
            pool.close()
        lease.release()


def _current_entries(plan: RunPlan, committed: dict[str, dict]) -> dict[str, dict]:
    entries = {**plan.entries, **committed}
    return {u.name: entries[u.name] for u in plan.units if u.name in entries and (u.name in plan.done or u.name in committed)}


def _stale_outputs(plan: RunPlan) -> bool:
    """Whether the prefix holds anything a reader would read that is not a current part."""
    current = {u.name for u in plan.units}
    return bool(plan.present - current) or bool(set(plan.entries) - current)


def _write_quietly(plan: RunPlan, summary: dict, lease: Lease) -> None:
    """A failed run's summary and the removal of its staging, only while it holds the lease: once another run
    has taken the output over, its summary and its staging there are the other run's."""
    try:
        if not lease.held():
            log.warning("not writing this run's failure summary: %s", lease.lost)
            return
        plan.manifest.write(SUMMARY, summary)
        plan.manifest.clear_staging()
    except Exception:  # noqa: BLE001 - the original failure matters more
        log.exception("could not write the failure summary")


__all__ += ["FULL_MANIFEST", "RunPlan", "ReplicaPool", "plan_run", "execute"]
