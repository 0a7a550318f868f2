"""``scripts/gpu_check.sh`` is the only way GPU figures get taken, in rare, short GPU sessions: its dry run
(every step on CPU with the tiny model) must go through, so that a broken step is found here and not on
the GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["gpu_tests", "build_checkpoint", "large_extractive_default", "large_precisions", "large_compat_float32",
         "small_paragraphs_compat", "job_vs_in_process"]

pytestmark = pytest.mark.timeout(900)


def test_the_gpu_check_script_dry_run_runs_every_step(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # bench-job starts its own Ray
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    outcomes = {line["step"]: line["exit_code"] for line in lines if "exit_code" in line}
    assert outcomes == {step: 0 for step in STEPS}, (tmp_path / "gpu_check.log").read_text()[-3000:]
    figures = {line["step"] for line in lines if "measure" in line or "measured" in line}
    assert figures >= set(STEPS) - {"gpu_tests", "build_checkpoint"}  # each benchmark step printed figures
    ratio = [line for line in lines if line["step"] == "job_vs_in_process" and "ratio" in line]
    assert ratio and ratio[0]["device"] == "cpu" and ratio[0]["ratio"] > 0
