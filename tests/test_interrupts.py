"""Interrupting ``lingua2-batch compress`` (SIGINT, SIGTERM) in a real process on its own local Ray: exit
130 / 143, one line on stderr saying how to resume, ``_summary.json`` status ``interrupted``, no staging and
no lease left behind; the same command then finishes the job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lingua2_batch import Compressor
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, make_corpus, read_output

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[1]
N_ROWS, FILES = 12, 4
WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(\S+ pid=")
ERROR_LINE = re.compile(r"\bERROR\b|^\[[^]]* E \d+ \d+\]")  # Python logging, Ray's C++ logging
# Ray's own report of a dashboard that did not start in time on a loaded machine: not the job's doing
RAY_DASHBOARD_START = re.compile(r"ERROR (services|dashboard)\.py:\d+ -- ")

# The production CLI, with only the scoring replica slowed down so that the signal lands mid-run.
SLOW_CLI = '''
import sys
import time

import lingua2_batch.pipeline as pipeline
from lingua2_batch.cli import main
from lingua2_batch.pipeline import stages


class SlowReplica(stages.Replica):
    def score(self, context, unit):
        time.sleep(4)
        return super().score(context, unit)


run_job = pipeline.run_job
pipeline.run_job = lambda config: run_job(config, replica_class=SlowReplica)
sys.exit(main(sys.argv[1:]))
'''


def _compress_args(corpus: Path, output: Path, model: str) -> list[str]:
    # address "local": the job's own Ray, whatever other clusters run on this machine
    return ["compress", "--input", str(corpus), "--output", str(output), "--model", model, "--rate", "0.5",
            "--ray-address", "local", "--num-gpus", "0", "--prepare-num-cpus", "0.5", "--score-num-cpus", "0.5",
            "--batch-size", "8", "--progress-interval-s", "1"]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Ray's dashboard gives up after 30 s by default: a shared machine can be slower
    return {**os.environ, "PYTHONPATH": path, "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "300"}


def _sigint_by_default() -> None:
    """In the child before exec: SIGINT back to its default, so that Python turns it into KeyboardInterrupt. A
    test runner started in the background by a shell without job control (``cmd &`` in a script) ignores
    SIGINT, the child would inherit that, and the signal this test sends would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_a_committed_unit(process: subprocess.Popen, output: Path, stderr: Path) -> None:
    deadline = time.monotonic() + 480  # generous: a loaded machine takes minutes to start Ray
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the job ended before it could be interrupted:\n{stderr.read_text()[-3000:]}"
        committed = list((output / "_manifest").rglob("*.json")) if (output / "_manifest").exists() else []
        if committed:
            return
        time.sleep(0.2)
    raise AssertionError(f"no unit committed in time:\n{stderr.read_text()[-3000:]}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_records_it_cleans_up_and_resumes(signum, code, scratch_model, tmp_path):
    texts = corpus_texts(N_ROWS)
    make_corpus(str(tmp_path / "in"), texts, files=FILES)
    output, stderr_path = tmp_path / "out", tmp_path / "stderr.txt"
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    args = _compress_args(tmp_path / "in", output, scratch_model)
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=stderr,
                                   env=_env(), cwd=tmp_path, preexec_fn=_sigint_by_default)
    try:
        _wait_for_a_committed_unit(process, output, stderr_path)
        process.send_signal(signum)
        stdout, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    # the driver's own lines: Ray forwards worker output ("(SlowReplica pid=...) ...") whenever it arrives
    # (split on "\n" only: progress bars end their updates with "\r")
    text = stderr_path.read_bytes().decode(errors="replace")
    lines = [line for line in text.split("\n") if line.strip() and not WORKER_LINE.match(line)]
    assert process.returncode == code, lines[-30:]
    name = signal.Signals(signum).name
    assert lines[-1] == (f"lingua2-batch compress: interrupted by {name}; committed units are kept; "
                         "rerun the same command to resume")
    assert len([line for line in lines if "rerun the same command" in line]) == 1
    assert not [line for line in lines if line.startswith("Traceback")]
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["status"] == "interrupted" and name in summary["error"]
    assert 1 <= summary["units"]["committed"] < FILES
    assert not (output / "_staging").exists() and not (output / "_lease.json").exists()
    assert not (output / "_SUCCESS").exists()
    # the same command resumes; quiet (SIGINT case): no log lines and no worker output forwarded by Ray;
    # not quiet (SIGTERM case): no ERROR line on this healthy run
    quiet = signum == signal.SIGINT
    rerun = subprocess.run([sys.executable, "-m", "lingua2_batch", *args, *(["--quiet"] if quiet else [])],
                           capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["units"]["skipped_already_done"] >= 1
    assert summary["rows"]["written"] == N_ROWS and summary["rows"]["unaccounted"] == 0
    expected = Compressor(scratch_model).compress_batch(texts, rate=0.5)
    table = read_output(str(output))
    assert table.column("compressed_text").to_pylist() == [r.compressed_prompt for r in expected]
    assert not (output / "_staging").exists() and not (output / "_lease.json").exists()
    lines = rerun.stderr.split("\n")
    if quiet:
        assert not [line for line in lines if WORKER_LINE.match(line) or " INFO " in line], lines[-20:]
    else:
        assert [line for line in lines if "lingua2_batch.job INFO Ray: cluster at " in line]
        assert not [line for line in lines if ERROR_LINE.search(line) and not RAY_DASHBOARD_START.search(line)]


def test_a_sigterm_while_ray_starts_is_an_interrupt_not_a_silent_exit():
    """ray.init's first step installs a SIGTERM handler that calls sys.exit(SIGTERM) (so that a signal while it
    starts exits); the run's own handler, put back after it, must still get that signal's meaning."""
    def exit_as_ray_init_does(signum: int, frame: object) -> None:
        sys.exit(signum)

    original = signal.getsignal(signal.SIGTERM)
    try:
        _sigterm_during_start(exit_as_ray_init_does)
    finally:
        signal.signal(signal.SIGTERM, original)


def _sigterm_during_start(exit_as_ray_init_does) -> None:
    from lingua2_batch.pipeline.interrupts import (Terminated, exit_code, keeping_sigterm_handler,
                                                   sigterm_interrupts)

    with sigterm_interrupts():
        with pytest.raises(Terminated) as interrupt:
            with keeping_sigterm_handler():
                signal.signal(signal.SIGTERM, exit_as_ray_init_does)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs at the next bytecode: never reached
        assert exit_code(interrupt.value) == 143
    with pytest.raises(SystemExit):  # without the run's handler, Ray's exit stands
        with keeping_sigterm_handler():
            signal.signal(signal.SIGTERM, exit_as_ray_init_does)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
