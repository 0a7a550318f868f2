"""The batch job's throughput on a local Ray cluster next to in-process ``Compressor.compress_batch`` on
the same rows: how much Ray Data's plumbing (serialisation, scheduling, the driver's writer) costs.

``bench_job()`` returns a dict; ``lingua2-batch bench-job`` prints its ``lines`` as JSON lines.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def _corpus(rows: int) -> list[str]:
    from ..model.scratch import shipped_corpus_texts

    texts = shipped_corpus_texts()
    return [texts[i % len(texts)] for i in range(rows)]


def bench_job(rows: int = 360, repeats: int = 1, workdir: str | None = None, files: int = 4,
              model: str | None = None, rate: float = 0.5, num_cpus: int | None = None) -> dict[str, Any]:
    """Time ``compress_batch`` in this process, then the Ray job over the same rows (Parquet on local
    disk, ``files`` input files). Both on CPU with the scratch sentencepiece checkpoint unless ``model``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ..compressor import Compressor
    from ..model.scratch import build_checkpoint
    from .config import JobConfig
    from .job import run_job

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
        pq.write_table(pa.table({"id": ids, "text": part}), corpus / f"part-{index:05d}.parquet")

    compressor = Compressor(model, device="cpu")
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
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count(), logging_level=logging.WARNING)
    ray_start_s = time.perf_counter() - started_ray
    job_times, summaries = [], []
    for attempt in range(repeats):
        output = base / f"out-{attempt}"
        shutil.rmtree(output, ignore_errors=True)
        config = JobConfig.from_mapping({
            "input": str(corpus), "output": str(output), "model": model, "rate": rate, "num_gpus": 0,
            "read_num_cpus": 0.25, "prepare_num_cpus": 0.5, "score_num_cpus": 1, "batch_size": 128,
            "min_replicas": 1, "max_replicas": 1,
        })
        started = time.perf_counter()
        report = run_job(config)
        job_times.append(time.perf_counter() - started)
        summaries.append(report.summary)
    best_in, best_job = min(in_process), min(job_times)
    result = {
        "rows": rows,
        "origin_tokens": tokens,
        "model": model,
        "in_process": {"seconds": best_in, "rows_per_s": rows / best_in, "tokens_per_s": tokens / best_in},
        "ray_job": {"seconds": best_job, "rows_per_s": rows / best_job, "tokens_per_s": tokens / best_job,
                    "ray_init_s": ray_start_s, "replicas": 1, "input_files": files,
                    "rows_written": summaries[-1]["rows"]["written"]},
        "ray_overhead_ratio": best_job / best_in,
    }
    result["lines"] = [
        {"measured": "compress_batch throughput (in process)", "on": f"{rows} rows, {tokens} tokens, CPU",
         "rows_per_s": result["in_process"]["rows_per_s"], "tokens_per_s": result["in_process"]["tokens_per_s"]},
        {"measured": "Ray batch job throughput (local cluster, 1 replica, incl. actor start and writes)",
         "on": f"{rows} rows in {files} Parquet files", "rows_per_s": result["ray_job"]["rows_per_s"],
         "tokens_per_s": result["ray_job"]["tokens_per_s"],
         "reference_rows_per_s": result["in_process"]["rows_per_s"]},
        {"measured": "Ray overhead (job time / in-process time)", "ratio": result["ray_overhead_ratio"]},
    ]
    if workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return result
