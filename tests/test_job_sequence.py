"""Several jobs in one Ray session, as a notebook, a rate sweep or a long-lived driver runs them: Ray reuses
worker processes between jobs, so nothing a worker caches may carry one job's options into the next. Every
job's output must equal ``Compressor(...).compress_batch`` with that job's own options."""

from __future__ import annotations

import pytest

from lingua2_batch import Compressor
from lingua2_batch.model.scratch import build_checkpoint
from lingua2_batch.pipeline import JobConfig, run_job
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, local_job_settings, make_corpus, read_output

pytestmark = pytest.mark.timeout(600)
N_ROWS = 16


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory) -> tuple[str, list[str]]:
    texts = corpus_texts(N_ROWS)
    folder = tmp_path_factory.mktemp("sequence-in")
    make_corpus(str(folder), texts, files=2)
    return str(folder), texts


@pytest.fixture(scope="module")
def wordpiece_model(tmp_path_factory) -> str:
    return str(build_checkpoint(tmp_path_factory.mktemp("second-model"), "wordpiece"))


def _expected(model: str, texts: list[str], compressor_args: dict, options: dict) -> list:
    return Compressor(model, **compressor_args).compress_batch(texts, **options)


def _check(output: str, expected: list, with_words: bool = False) -> None:
    rows = read_output(output).to_pylist()
    assert len(rows) == len(expected)
    by_id = {row["id"]: row for row in rows}
    for index, result in enumerate(expected):
        row = by_id[f"doc-{index:06d}"]
        assert row["error"] is None
        assert row["compressed_text"] == result.compressed_prompt, f"record {index}"
        assert row["compressed_tokens"] == result.compressed_tokens
        assert row["rate"] == pytest.approx(result.rate)
        if with_words:
            assert row["words"] == list(result.contexts[0].words)
        else:
            assert "words" not in row


def test_jobs_in_one_session_each_use_their_own_options(ray_local, scratch_model, wordpiece_model, corpus_folder,
                                                        tmp_path):
    folder, texts = corpus_folder
    counter = f"hf:{scratch_model}"
    # (job settings, Compressor arguments, compression options): each differs from the first in one thing
    sequence = [
        ({}, {}, {"rate": 0.5}),
        ({}, {}, {"rate": 0.3}),
        ({"compat": "llmlingua"}, {"compat": "llmlingua"}, {"rate": 0.5}),
        ({}, {}, {"rate": 0.5, "force_tokens": ["the", "council"]}),
        ({"token_counter": counter}, {"token_counter": counter}, {"rate": 0.5}),
        ({"include_word_labels": True}, {}, {"rate": 0.4}),
        ({"model": wordpiece_model}, {}, {"rate": 0.5}),
        ({}, {}, {"rate": 0.7, "drop_consecutive": True}),
    ]
    distinct_outputs = set()
    for step, (settings, compressor_args, options) in enumerate(sequence):
        model = settings.get("model", scratch_model)
        output = str(tmp_path / f"out-{step}")
        run_job(JobConfig.from_mapping({**local_job_settings, "input": folder, "output": output, "model": scratch_model,
                                        **settings, **options}))
        expected = _expected(model, texts, compressor_args, options)
        _check(output, expected, with_words=settings.get("include_word_labels", False))
        distinct_outputs.add(tuple(r.compressed_prompt for r in expected))
    assert len(distinct_outputs) >= 6, "the options chosen must change the output, or this test proves nothing"


def test_incremental_run_at_a_new_rate_carries_nothing_over(ray_local, scratch_model, corpus_folder, tmp_path):
    folder, texts = corpus_folder
    output = str(tmp_path / "out")
    common = {**local_job_settings, "input": folder, "output": output, "model": scratch_model, "incremental": True}
    run_job(JobConfig.from_mapping({**common, "rate": 0.5}))
    _check(output, _expected(scratch_model, texts, {}, {"rate": 0.5}))
    report = run_job(JobConfig.from_mapping({**common, "rate": 0.3, "overwrite": True}))
    assert report.summary["rows"]["carried_over"] == 0
    _check(output, _expected(scratch_model, texts, {}, {"rate": 0.3}))
    # the same rate again: everything is already done, no model work
    again = run_job(JobConfig.from_mapping({**common, "rate": 0.3}))
    assert again.summary["model_work"] is False
    _check(output, _expected(scratch_model, texts, {}, {"rate": 0.3}))


def test_model_replaced_in_place_is_not_served_from_a_worker_cache(ray_local, tmp_path, corpus_folder):
    """Same path, other checkpoint (a retrained model copied over the old one): the tokenizer side is
    rebuilt, because workers key their cache on the model's content identity, not its path."""
    folder, texts = corpus_folder
    model = tmp_path / "model"
    build_checkpoint(model, "sentencepiece")
    run_job(JobConfig.from_mapping({**local_job_settings, "input": folder, "output": str(tmp_path / "a"),
                                    "model": str(model), "rate": 0.5}))
    import shutil

    shutil.rmtree(model)
    build_checkpoint(model, "wordpiece")
    run_job(JobConfig.from_mapping({**local_job_settings, "input": folder, "output": str(tmp_path / "b"),
                                    "model": str(model), "rate": 0.5}))
    _check(str(tmp_path / "b"), _expected(str(model), texts, {}, {"rate": 0.5}))
