"""The batch job's throughput on a local Ray cluster next to in-process ``Compressor.compress_batch`` on
the same rows: how much the job's plumbing costs (Ray's actor start, scheduling, object-store copies,
the workers' reads and commits).

``bench_job()`` returns a dict; ``lingua2-batch bench-job`` prints its ``lines`` as JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence


def _corpus(rows: int) -> list[str]:
    from ..model.scratch import shipped_corpus_texts

    texts = shipped_corpus_texts()
    return [texts[i % len(texts)] for i in range(rows)]


def bench_job(rows: int = 360, repeats: int = 1, workdir: str | None = None, files: int = 4,
              model: str | None = None, rate: float = 0.5, num_cpus: int | None = None,
              score_num_cpus: float | None = None, prepare_num_cpus: float = 1.0,
              row_group_rows: int = 64, unit_rows: int = 128, device: str = "cpu",
              dtype: str | None = None, prepare_in: str = "auto",
              replica_counts: Sequence[int] = (1,),
              concurrencies: Sequence[int | None] = (None,)) -> dict[str, Any]:
    """Time ``compress_batch`` in this process, then the Ray job over the same rows (Parquet on local
    disk, ``files`` input files), both on ``device`` with the scratch sentencepiece checkpoint unless
    ``model``.

    On CPU the replica gets every core by default (``score_num_cpus``; Ray gives its torch as many
    threads), as the in-process run has, and prepares its own units (``prepare_in`` auto); with
    ``prepare_in="tasks"`` Ray gets one logical CPU more so that a prepare task tokenizes next to it. On
    CUDA the replica holds the one GPU and a CPU, and the other cores prepare. The job runs once per entry
    of ``replica_counts`` and ``concurrencies`` (``replica_concurrency``, units a replica works on at once; None:
    the job's default):
    several replicas share the one GPU (``num_gpus`` 1/N each) or split the cores. Files are cut into small
    row groups and units so that the first unit starts soon and preparing overlaps scoring."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ..compressor import Compressor
    from ..model.scratch import build_checkpoint
    from .config import JobConfig
    from .job import run_job
    from .stages import replica_concurrency

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lingua2-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    if model is None:
        model_dir = base / "model"
        if not (model_dir / "config.json").exists():
            build_checkpoint(model_dir, "sentencepiece")
        model = str(model_dir)
    texts = _corpus(rows)
    corpus = base / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir()
    per_file = -(-rows // files)
    for index in range(files):
        part = texts[index * per_file:(index + 1) * per_file]
        ids = [f"r{index * per_file + i}" for i in range(len(part))]
        pq.write_table(pa.table({"id": ids, "text": part}), corpus / f"part-{index:05d}.parquet",
                       row_group_size=row_group_rows)

    compressor = Compressor(model, device=device, dtype=dtype)
    compressor.compress_batch(texts[:4], rate=rate)  # warm-up
    in_process = []
    tokens = 0
    for _ in range(repeats):
        started = time.perf_counter()
        results = compressor.compress_batch(texts, rate=rate)
        in_process.append(time.perf_counter() - started)
        tokens = sum(r.origin_tokens for r in results)
    del compressor

    started_ray = time.perf_counter()
    cores = num_cpus or os.cpu_count() or 1
    gpus = 1 if device.startswith("cuda") else 0
    most = max(replica_counts)
    if not ray.is_initialized():
        scoring_cpus = (most if gpus else cores) if score_num_cpus is None else score_num_cpus * most
        ray.init(address="local", num_cpus=int(max(cores, scoring_cpus + prepare_num_cpus)), num_gpus=gpus,
                 include_dashboard=False, logging_level=logging.WARNING)
    ray_start_s = time.perf_counter() - started_ray
    best_in = min(in_process)
    result: dict[str, Any] = {
        "rows": rows,
        "origin_tokens": tokens,
        "model": model,
        "in_process": {"seconds": best_in, "rows_per_s": rows / best_in, "tokens_per_s": tokens / best_in},
        "device": device,
        "ray_jobs": [],
    }
    result["lines"] = [
        {"measured": "compress_batch throughput (in process)", "on": f"{rows} rows, {tokens} tokens, {device}",
         "rows_per_s": result["in_process"]["rows_per_s"], "tokens_per_s": result["in_process"]["tokens_per_s"]},
    ]
    for replicas, concurrency in [(r, c) for r in replica_counts for c in concurrencies]:
        # on CUDA the replicas share the one GPU (one's host work overlaps another's forward); on CPU they
        # split the cores
        score_cpus = (1 if gpus else cores / replicas) if score_num_cpus is None else score_num_cpus
        job_times, summaries = [], []
        for attempt in range(repeats):
            output = base / f"out-{replicas}-{concurrency}-{attempt}"
            shutil.rmtree(output, ignore_errors=True)
            config = JobConfig.from_mapping({
                "input": str(corpus), "output": str(output), "model": model, "rate": rate,
                "num_gpus": gpus / replicas, "device": device, "dtype": dtype,
                "prepare_num_cpus": prepare_num_cpus, "score_num_cpus": score_cpus, "batch_size": 128,
                "min_replicas": replicas, "max_replicas": replicas, "unit_rows": unit_rows, "prepare_in": prepare_in,
                "replica_concurrency": concurrency,
            })
            concurrency_used = replica_concurrency(config, device)
            started = time.perf_counter()
            report = run_job(config)
            job_times.append(time.perf_counter() - started)
            summaries.append(report.summary)
        best_job = min(job_times)
        best = summaries[job_times.index(best_job)]
        # the scoring itself: from the first replica ready (its model loaded) to the job's end
        after_start = best["time_s"] - best["replicas_ready_s"][0]
        job = {"seconds": best_job, "rows_per_s": rows / best_job, "tokens_per_s": tokens / best_job,
               "first_replica_ready_s": best["replicas_ready_s"][0],
               "rows_per_s_after_first_replica_ready": rows / after_start,
               "ray_init_s": ray_start_s, "replicas": replicas, "replica_concurrency": concurrency_used,
               "input_files": files, "units": best["units"]["total"], "score_num_cpus": score_cpus,
               "prepare_num_cpus": prepare_num_cpus, "prepare_in": prepare_in,
               "rows_written": best["rows"]["written"], "ray_overhead_ratio": best_job / best_in}
        result["ray_jobs"].append(job)
        result["lines"] += [
            {"measured": f"Ray batch job throughput (local cluster, {replicas} replica(s), incl. actor start and writes)",
             "on": f"{rows} rows in {files} Parquet files", "rows_per_s": job["rows_per_s"],
             "tokens_per_s": job["tokens_per_s"], "reference_rows_per_s": result["in_process"]["rows_per_s"],
             "replica_concurrency": job["replica_concurrency"]},
            {"measured": "Ray overhead (job time / in-process time)", "ratio": job["ray_overhead_ratio"],
             "job_throughput_share_of_in_process": 1 / job["ray_overhead_ratio"], "device": device,
             "replicas": replicas, "replica_concurrency": job["replica_concurrency"]},
            {"measured": "job throughput after its first replica was ready / in-process throughput",
             "ratio": job["rows_per_s_after_first_replica_ready"] / result["in_process"]["rows_per_s"],
             "first_replica_ready_s": job["first_replica_ready_s"], "device": device, "replicas": replicas,
             "replica_concurrency": job["replica_concurrency"]},
        ]
    # the first replica count's figures, under the names callers have always read
    result["ray_job"], result["ray_overhead_ratio"] = result["ray_jobs"][0], result["ray_jobs"][0]["ray_overhead_ratio"]
    if workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return result


def bench_incremental(rows: int = 10_000, files: int = 10, changed_share: float = 0.01,
                      workdir: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """A nightly run's cost: a full run, a rerun with nothing changed, and an incremental rerun after
    ``changed_share`` of the texts changed (spread over every file). One JSON-able line per run."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ..model.scratch import build_checkpoint, shipped_corpus_texts
    from .config import JobConfig
    from .job import run_job

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lingua2-bench-incremental-"))
    shutil.rmtree(base / "in", ignore_errors=True)
    shutil.rmtree(base / "out", ignore_errors=True)
    (base / "in").mkdir(parents=True)
    if model is None:
        model = str(build_checkpoint(base / "model", "sentencepiece"))
    passages = [p.strip() for t in shipped_corpus_texts() for p in t.split("\n\n") if p.strip()]
    texts = [f"Record {i}. {passages[i % len(passages)]}" for i in range(rows)]
    per_file = -(-rows // files)

    def write(corpus: list[str]) -> None:
        for index in range(files):
            part = corpus[index * per_file:(index + 1) * per_file]
            ids = [f"doc-{index * per_file + i:07d}" for i in range(len(part))]
            pq.write_table(pa.table({"id": ids, "text": part}), base / "in" / f"part-{index:03d}.parquet")

    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)
    settings = {"input": str(base / "in"), "output": str(base / "out"), "model": model, "rate": 0.5,
                "id_column": "id", "incremental": True, "num_gpus": 0, "read_num_cpus": 0.25,
                "prepare_num_cpus": 0.5, "score_num_cpus": 1}
    lines = []

    def run(label: str) -> None:
        started = time.perf_counter()
        summary = run_job(JobConfig.from_mapping(settings)).summary
        lines.append({"measured": "incremental job run", "run": label, "rows": rows, "files": files,
                      "seconds": round(time.perf_counter() - started, 2), "model_work": summary["model_work"],
                      "rows_written": summary["rows"]["written"], "carried_over": summary["rows"]["carried_over"],
                      "unaccounted": summary["rows"]["unaccounted"]})

    write(texts)
    run("full")
    run("rerun, nothing changed")
    step = max(1, round(1 / changed_share))
    write([text + " (amended)" if i % step == 0 else text for i, text in enumerate(texts)])
    run(f"rerun, {changed_share:.0%} of texts changed")
    return lines


# ---------------------------------------------------------------------------------------------------------
# bench-scale (issue 10): driver memory, scaling over replicas, Ray overhead, a nightly run at scale.
# Scoring is simulated (``simulated.SimulatedReplica``) where the model is not what is measured: preparing
# (the real tokenizer) and everything Ray does stay real; only ``Replica.finish`` is replaced.

MEMORY_GOAL_MB = 100
SCALING_GOAL = 0.85
DRIVER_CPU_GOAL = 0.05
OVERHEAD_GOAL = 0.8


def _simulated_replica(seconds_per_model_token: float, timing_dir: str | None = None) -> type:
    from .simulated import simulated_replica  # imports torch (through the scoring replica): only when run

    return simulated_replica(seconds_per_model_token, timing_dir)


def _short_texts(first: int, last: int, chars: int) -> list[str]:
    """Texts number ``first`` to ``last - 1``, about ``chars`` characters each, cut from the shipped corpus;
    each starts with its number so that none is repeated."""
    from ..model.scratch import shipped_corpus_texts

    body = " ".join(" ".join(shipped_corpus_texts()).split())
    span = max(1, len(body) - chars - 1)
    return [f"Record {i}. " + body[(i * 7919) % span:(i * 7919) % span + chars] for i in range(first, last)]


def _write_short_corpus(folder: Path, records: int, files: int, chars: int, row_group_rows: int,
                        changed_every: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    per_file = -(-records // files)
    for index in range(files):
        first, last = index * per_file, min(records, (index + 1) * per_file)
        texts = _short_texts(first, last, chars)
        if changed_every:
            texts = [t + " (amended)" if (first + i) % changed_every == 0 else t for i, t in enumerate(texts)]
        ids = [f"doc-{first + i:09d}" for i in range(len(texts))]
        pq.write_table(pa.table({"id": ids, "text": texts}), folder / f"part-{index:03d}.parquet",
                       row_group_size=row_group_rows)


def _write_big_file(path: Path, target_bytes: int, chars: int, payload_bytes: int, row_group_rows: int) -> int:
    """One Parquet file of at least ``target_bytes``: short texts plus an incompressible pass-through
    column (``payload``), written row group by row group so that this process never holds it whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_row = chars + payload_bytes
    rows = -(-target_bytes // per_row)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("payload", pa.binary())])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for first in range(0, rows, row_group_rows):
            count = min(row_group_rows, rows - first)
            texts = _short_texts(first, first + count, chars)
            payload = pa.array([os.urandom(payload_bytes) for _ in range(count)], pa.binary())
            writer.write_table(pa.table({"id": [f"doc-{first + i:09d}" for i in range(count)], "text": texts,
                                         "payload": payload}, schema=schema))
    return rows


def _in_child_process(function: Any, *args: Any) -> Any:
    """Run ``function(*args)`` in a fresh process, so that generating inputs leaves no memory behind in
    the driver whose peak is measured (allocators keep freed memory)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _scratch_model(base: Path) -> str:
    from ..model.scratch import build_checkpoint

    model_dir = base / "model"
    if not (model_dir / "config.json").exists():
        build_checkpoint(model_dir, "sentencepiece")
    return str(model_dir)


def _job_settings(corpus: Path, output: Path, model: str, **extra: Any) -> dict[str, Any]:
    # the production shape: prepare tasks beside (simulated) accelerator replicas
    settings = {"input": str(corpus), "output": str(output), "model": model, "rate": 0.5, "num_gpus": 0,
                "prepare_num_cpus": 1, "score_num_cpus": 0, "progress_interval_s": 60.0, "prepare_in": "tasks"}
    settings.update(extra)
    return settings


def _timed_job(settings: dict[str, Any], replica_class: type) -> dict[str, Any]:
    """Run one job; wall time, the driver's CPU time (less the memory sampler's) and peak RSS, the summary's
    row counts."""
    from ..bench import PeakRss
    from .config import JobConfig
    from .job import run_job

    started, cpu = time.perf_counter(), time.process_time()
    with PeakRss() as rss:  # this process only: Ray's workers are other processes
        summary = run_job(JobConfig.from_mapping(settings), replica_class=replica_class).summary
    wall = time.perf_counter() - started
    return {"seconds": round(wall, 2), "driver_cpu_s": round(time.process_time() - cpu - rss.sampler_cpu_s, 2),
            "driver_rss_start_mb": round(rss.baseline, 1), "driver_rss_peak_mb": round(rss.peak, 1),
            "driver_rss_growth_in_job_mb": rss.growth,
            "rows_read": summary["rows"]["read"], "rows_written": summary["rows"]["written"],
            "unaccounted": summary["rows"]["unaccounted"], "units": summary["units"]["total"],
            "model_work": summary["model_work"], "carried_over": summary["rows"]["carried_over"],
            "processed_this_run": summary["rows"]["processed_this_run"],
            "load_average_1m": round(os.getloadavg()[0], 1)}  # the machine may be shared: read figures with it


def _start_local_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)


def bench_driver_memory(base: Path, sizes: list[int], files: int = 20, chars: int = 200,
                        big_file_mb: int = 1024, unit_rows: int = 100_000,
                        payload_bytes: int = 65_536) -> Iterator[dict[str, Any]]:
    """Peak RSS of this (driver) process per job, smallest corpus first, then one big file (its size comes
    mostly from an incompressible pass-through column, so that this machine's CPUs need not tokenize 1 GB
    of text). Yields each run's line as soon as it is done."""
    model = _scratch_model(base)
    _start_local_ray()
    replica = _simulated_replica(0.0)
    peaks = []
    for records in sorted(sizes):
        corpus = base / f"memory-{records}"
        started = time.perf_counter()
        _in_child_process(_write_short_corpus, corpus, records, files, chars, min(unit_rows, 50_000))
        generated = time.perf_counter() - started
        run = _timed_job(_job_settings(corpus, base / f"memory-out-{records}", model, unit_rows=unit_rows),
                         replica)
        peaks.append(run["driver_rss_peak_mb"])
        yield {"part": "memory", "measured": "driver peak RSS during one job (simulated scoring)",
               "on": f"{records} records of ~{chars} chars in {files} files, 1-layer scratch model's tokenizer, "
                     f"{os.cpu_count()} CPUs", "generate_s": round(generated, 1), **run}
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.rmtree(base / f"memory-out-{records}", ignore_errors=True)
    if big_file_mb:
        corpus = base / "memory-big"
        shutil.rmtree(corpus, ignore_errors=True)
        started = time.perf_counter()
        rows = _in_child_process(_write_big_file, corpus / "big.parquet", big_file_mb << 20, chars, payload_bytes,
                                 max(1, (32 << 20) // (chars + payload_bytes)))  # ~32 MB row groups
        generated = time.perf_counter() - started
        size_mb = (corpus / "big.parquet").stat().st_size / 2**20
        run = _timed_job(_job_settings(corpus, base / "memory-out-big", model, passthrough_columns=["payload"],
                                       unit_rows=unit_rows), replica)
        peaks.append(run["driver_rss_peak_mb"])
        yield {"part": "memory", "measured": "driver peak RSS during one job (simulated scoring)",
               "on": f"one {size_mb:.0f} MB Parquet file: {rows} records of ~{chars} chars + "
                     f"{payload_bytes // 1024} KB incompressible pass-through column", "generate_s": round(generated, 1),
               **run}
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.rmtree(base / "memory-out-big", ignore_errors=True)
    growth = max(peaks) - peaks[0]
    yield {"part": "memory", "measured": "driver peak RSS growth, smallest run to the largest",
           "mb": round(growth, 1), "goal": f"< {MEMORY_GOAL_MB} MB", "met": growth < MEMORY_GOAL_MB}


def bench_scaling(base: Path, replica_counts: list[int], records_per_replica: int, chars: int = 200,
                  unit_rows: int = 50, seconds_per_model_token: float = 2e-3, files: int = 8) -> list[dict[str, Any]]:
    """Throughput with n replicas on a local multi-node cluster: one head node with this machine's CPUs
    (prepare and commit tasks), one node per replica holding one ``fake_gpu`` and no CPU. Each run gets
    ``records_per_replica`` x n records, so every run lasts about as long; a warm-up job first starts the
    prepare workers. Throughput is taken from the first scoring call's start to the last one's end (the
    replicas' own timing), which leaves out planning and actor start-up; the job's wall time is reported too."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    model = _scratch_model(base)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": os.cpu_count(), "include_dashboard": False})
    lines, throughputs = [], {}
    try:
        for _ in range(max(replica_counts)):
            cluster.add_node(num_cpus=0, resources={"fake_gpu": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        warm_up = base / "scaling-warm-up"
        _write_short_corpus(warm_up, unit_rows * 4, 4, chars, row_group_rows=unit_rows)
        _timed_job(_job_settings(warm_up, base / "scaling-warm-up-out", model, unit_rows=unit_rows,
                                 prepare_num_cpus=0.5, replica_resources={"fake_gpu": 1}), _simulated_replica(0.0))
        shutil.rmtree(base / "scaling-warm-up-out", ignore_errors=True)
        for count in replica_counts:
            records = records_per_replica * count
            corpus = base / "scaling-in"
            _write_short_corpus(corpus, records, files, chars, row_group_rows=unit_rows)
            timing = base / f"scaling-timing-{count}"
            shutil.rmtree(timing, ignore_errors=True)
            timing.mkdir()
            output = base / f"scaling-out-{count}"
            shutil.rmtree(output, ignore_errors=True)
            run = _timed_job(_job_settings(corpus, output, model, unit_rows=unit_rows, max_replicas=count,
                                           min_replicas=1, prepare_num_cpus=0.5, replica_resources={"fake_gpu": 1}),
                             _simulated_replica(seconds_per_model_token, str(timing)))
            calls = [json.loads(line) for path in timing.glob("*.jsonl") for line in path.read_text().splitlines()]
            # steady state: first scoring call started to last one ended (excludes actor start-up and plan)
            span = max(c["end"] for c in calls) - min(c["start"] for c in calls)
            busy = sum(c["end"] - c["start"] for c in calls)
            ideal = count * records / (sum(c["tokens"] for c in calls) * seconds_per_model_token)
            throughputs[count] = records / span
            lines.append({"part": "scaling", "measured": "job throughput with n replicas (simulated scoring)",
                          "on": f"{records} records of ~{chars} chars in {files} files, {unit_rows} rows per unit, "
                                f"{seconds_per_model_token * 1e6:.0f} us per model token, {count} fake-GPU nodes + "
                                f"head with {os.cpu_count()} CPUs", "replicas": count,
                          "records_per_s_scoring": round(records / span, 1),
                          "records_per_s_job": round(records / run["seconds"], 1),
                          "share_of_simulated_ideal": round(records / span / ideal, 3),
                          "replica_busy_share": round(busy / (span * count), 3),
                          "driver_cpu_share_of_wall": round(run["driver_cpu_s"] / run["seconds"], 4), **run})
            shutil.rmtree(output, ignore_errors=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    smallest = min(throughputs)
    for count in sorted(throughputs):
        if count == smallest:
            continue
        linear = throughputs[smallest] * count / smallest
        lines.append({"part": "scaling", "measured": f"throughput at {count} replicas / linear from {smallest}",
                      "ratio": round(throughputs[count] / linear, 3), "goal": f">= {SCALING_GOAL}"
                      if count == max(throughputs) else None, "met": throughputs[count] / linear >= SCALING_GOAL
                      if count == max(throughputs) else None})
    shares = [line["driver_cpu_share_of_wall"] for line in lines if "driver_cpu_share_of_wall" in line]
    lines.append({"part": "scaling", "measured": "driver CPU time / wall time, worst run", "ratio": max(shares),
                  "goal": f"< {DRIVER_CPU_GOAL}", "met": max(shares) < DRIVER_CPU_GOAL})
    return lines


def bench_nightly(base: Path, records: int, files: int = 20, chars: int = 200, changed_share: float = 0.01,
                  unit_rows: int = 100_000) -> list[dict[str, Any]]:
    """A nightly run at scale with simulated scoring: full, unchanged rerun, rerun after ``changed_share``
    of the texts changed (spread over every file)."""
    model = _scratch_model(base)
    _start_local_ray()
    corpus, output = base / "nightly-in", base / "nightly-out"
    shutil.rmtree(output, ignore_errors=True)
    _write_short_corpus(corpus, records, files, chars, row_group_rows=min(unit_rows, 50_000))
    settings = _job_settings(corpus, output, model, unit_rows=unit_rows, incremental=True)
    replica = _simulated_replica(0.0)
    runs = {"full": _timed_job(settings, replica), "unchanged": _timed_job(settings, replica)}
    _write_short_corpus(corpus, records, files, chars, row_group_rows=min(unit_rows, 50_000),
                        changed_every=max(1, round(1 / changed_share)))
    runs["changed"] = _timed_job(settings, replica)
    full = runs["full"]["seconds"]
    on = f"{records} records of ~{chars} chars in {files} files, simulated scoring, {os.cpu_count()} CPUs"
    lines = [{"part": "nightly", "measured": "incremental job run", "run": label, "on": on, **run}
             for label, run in runs.items()]
    unchanged, changed = runs["unchanged"]["seconds"] / full, runs["changed"]["seconds"] / full
    lines.append({"part": "nightly", "measured": "unchanged rerun time / full run time", "ratio": round(unchanged, 4),
                  "model_work": runs["unchanged"]["model_work"], "goal": "< 0.05, no model work",
                  "met": unchanged < 0.05 and not runs["unchanged"]["model_work"]})
    lines.append({"part": "nightly", "measured": f"rerun after {changed_share:.0%} changed / full run time",
                  "ratio": round(changed, 4), "goal": "<= 0.03", "met": changed <= 0.03})
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    return lines


# bench_job's settings before issue 10: one unit per file, a 1-CPU (1-thread) replica, half-CPU prepares
_OVERHEAD_BEFORE = {"score_num_cpus": 1, "prepare_num_cpus": 0.5, "row_group_rows": 1 << 20, "unit_rows": 100_000,
                    "prepare_in": "tasks", "concurrencies": (1,)}


def bench_overhead(base: Path, rows: int, compare_before: bool = True) -> list[dict[str, Any]]:
    """``bench_job`` (real scorer) as bench-scale lines: its current settings (the replica prepares its own
    units) and (``compare_before``) the same with prepare tasks beside the replica and its settings before
    issue 10, one right after the other on the same rows, so that they are compared side by side."""
    import ray

    variants = [("current settings", {})]
    if compare_before:
        variants += [("prepare tasks beside the replica", {"prepare_in": "tasks"}),
                     ("settings before issue 10", _OVERHEAD_BEFORE)]
    lines = []
    for label, settings in variants:
        if ray.is_initialized():
            ray.shutdown()  # bench_job starts its own local Ray sized for its replica
        result = bench_job(rows=rows, workdir=str(base / "overhead"), **settings)
        lines += [{"part": "overhead", "variant": label, **line} for line in result["lines"]]
        ratio = 1 / result["ray_overhead_ratio"]
        job = result["ray_job"]
        lines.append({"part": "overhead", "variant": label,
                      "measured": "job throughput / in-process compress_batch throughput",
                      "on": f"{rows} rows, real scorer (scratch model), {os.cpu_count()} CPUs, {job['units']} units, "
                            f"replica {job['score_num_cpus']} CPUs, prepare {job['prepare_num_cpus']} CPUs, "
                            f"prepare_in {job['prepare_in']}, {job['replica_concurrency']} unit(s) per replica at once",
                      "ratio": round(ratio, 3), "rows_written": job["rows_written"],
                      "load_average_1m": round(os.getloadavg()[0], 1),
                      "goal": f">= {OVERHEAD_GOAL}" if not settings else None,
                      "met": ratio >= OVERHEAD_GOAL if not settings else None})
    return lines


def bench_scale(parts: list[str], workdir: str | None = None, memory_sizes: tuple[int, ...] = (20_000, 200_000, 2_000_000),
                memory_files: int = 20, big_file_mb: int = 1024, scaling_records_per_replica: int = 600,
                replica_counts: tuple[int, ...] = (1, 2, 4, 8), seconds_per_model_token: float = 2e-3,
                scaling_unit_rows: int = 50, overhead_rows: int = 3600, nightly_records: int = 1_000_000,
                nightly_files: int = 20, unit_rows: int = 100_000, chars: int = 200, overhead_compare: bool = True):
    """Yield bench-scale's JSON-able lines, part by part (each part as soon as it is done)."""
    import ray

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lingua2-bench-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        if "memory" in parts:
            yield from bench_driver_memory(base, list(memory_sizes), memory_files, chars, big_file_mb, unit_rows)
        if "nightly" in parts:
            yield from bench_nightly(base, nightly_records, nightly_files, chars, unit_rows=unit_rows)
        if "scaling" in parts:
            yield from bench_scaling(base, list(replica_counts), scaling_records_per_replica, chars, scaling_unit_rows,
                                     seconds_per_model_token)
        if "overhead" in parts:
            yield from bench_overhead(base, overhead_rows, overhead_compare)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` as ``(1, 2, 4)``: an argparse type for lists of counts."""
    import argparse

    try:
        values = tuple(int(value) for value in text.split(",") if value.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, got {text!r}")
    return values


def add_bench_scale_parser(subparsers: Any) -> None:
    """``lingua2-batch bench-scale``: issue 10's benchmark, as JSON lines (what, on what, figure, goal)."""
    parser = subparsers.add_parser("bench-scale", help="driver memory, replica scaling, Ray overhead, nightly at scale")
    parser.add_argument("--part", choices=["memory", "scaling", "overhead", "nightly", "all"], default="all",
                        help="which measurement: driver memory, replica scaling, Ray overhead, nightly reruns")
    parser.add_argument("--workdir", default=None, help="keep model and inputs here (default: a temporary folder)")
    parser.add_argument("--memory-sizes", type=positive_int_list, default=(20_000, 200_000, 2_000_000),
                        help="records per memory run, comma-separated")
    parser.add_argument("--memory-files", type=int, default=20, help="input files of each memory run")
    parser.add_argument("--big-file-mb", type=int, default=1024, help="size of the one-file memory run; 0 skips it")
    parser.add_argument("--scaling-records-per-replica", type=int, default=600,
                        help="records per replica in each scaling run (work grows with the replicas)")
    parser.add_argument("--replicas", type=positive_int_list, default=(1, 2, 4, 8), help="replica counts, comma-separated")
    parser.add_argument("--seconds-per-model-token", type=float, default=2e-3, help="simulated scoring cost")
    parser.add_argument("--scaling-unit-rows", type=int, default=50, help="unit size of the scaling runs")
    parser.add_argument("--overhead-rows", type=int, default=3600, help="rows of the Ray-overhead comparison")
    parser.add_argument("--nightly-records", type=int, default=1_000_000, help="records of the nightly runs")
    parser.add_argument("--nightly-files", type=int, default=20, help="input files of the nightly runs")
    parser.add_argument("--unit-rows", type=int, default=100_000, help="unit size of the memory and nightly runs")
    parser.add_argument("--chars", type=int, default=200, help="characters per record")
    parser.add_argument("--overhead-current-only", action="store_true",
                        help="overhead: only the current settings, not the variants compared beside them")

    def run(args: Any) -> int:
        parts = ["memory", "scaling", "overhead", "nightly"] if args.part == "all" else [args.part]
        for line in bench_scale(parts, args.workdir, args.memory_sizes, args.memory_files, args.big_file_mb,
                                args.scaling_records_per_replica, args.replicas, args.seconds_per_model_token,
                                args.scaling_unit_rows, args.overhead_rows, args.nightly_records,
                                args.nightly_files, args.unit_rows, args.chars, not args.overhead_current_only):
            print(json.dumps(line), flush=True)
        return 0

    parser.set_defaults(handler=run)
