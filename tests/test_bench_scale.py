"""``lingua2-batch bench-scale`` end to end on tiny sizes: every part runs, prints JSON lines that say
what was measured, and every job it times writes as many rows as it read. No timings are asserted."""

from __future__ import annotations

import json

from lingua2_batch.cli import main

TINY = ["--memory-sizes", "40,80", "--memory-files", "2", "--big-file-mb", "1", "--unit-rows", "30",
        "--scaling-records-per-replica", "20", "--replicas", "1,2", "--scaling-unit-rows", "10",
        "--seconds-per-model-token", "1e-5", "--overhead-rows", "16", "--nightly-records", "100",
        "--nightly-files", "2", "--overhead-current-only"]


def test_bench_scale_all_parts(tmp_path, capsys):
    code = main(["bench-scale", "--part", "all", "--workdir", str(tmp_path), *TINY])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {line["part"] for line in lines} == {"memory", "scaling", "overhead", "nightly"}
    assert all(isinstance(line["measured"], str) and line["measured"] for line in lines)

    jobs = [line for line in lines if "rows_read" in line]
    # memory: 2 corpora + 1 big file; nightly: full, unchanged, changed; scaling: 1 and 2 replicas
    assert len(jobs) == 3 + 3 + 2
    for job in jobs:
        assert job["rows_read"] == job["rows_written"] > 0 and job["unaccounted"] == 0
        assert job["driver_rss_peak_mb"] >= job["driver_rss_start_mb"] > 0
    memory = [job for job in jobs if job["part"] == "memory"]
    assert [job["rows_read"] for job in memory[:2]] == [40, 80]
    assert memory[2]["units"] >= 1
    scaling = [job for job in jobs if job["part"] == "scaling"]
    assert [(job["replicas"], job["rows_read"]) for job in scaling] == [(1, 20), (2, 40)]
    nightly = {job["run"]: job for job in jobs if job["part"] == "nightly"}
    assert nightly["full"]["model_work"] and nightly["full"]["carried_over"] == 0
    assert not nightly["unchanged"]["model_work"]
    assert nightly["changed"]["model_work"] and 0 < nightly["changed"]["carried_over"] < 100

    goals = [line for line in lines if line.get("goal")]
    assert {line["part"] for line in goals} == {"memory", "scaling", "overhead", "nightly"}
    assert all(isinstance(line["met"], bool) for line in goals)
    overhead = next(line for line in goals if line["part"] == "overhead")
    assert overhead["rows_written"] == 16 and overhead["ratio"] > 0
