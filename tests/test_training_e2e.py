"""End to end, offline, on CPU: teacher (loopback OpenAI-protocol server) → label → filter → train a
from-scratch model on a learnable rule (drop function words) → evaluate on held-out documents →
compress with the trained checkpoint. Also the same loop under Ray Train's TorchTrainer, and the
label and filter jobs writing to an object store (moto's S3 server on loopback)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from lingua2_batch import Compressor  # noqa: E402
from lingua2_batch.model.scratch import build_checkpoint  # noqa: E402
from lingua2_batch.core.token_counting import resolve_token_counter  # noqa: E402
from lingua2_batch.training.evaluate import evaluate_checkpoint  # noqa: E402
from lingua2_batch.training.stages import read_labelled, run_filter_job, run_label_job  # noqa: E402
from lingua2_batch.training.teacher import TeacherConfig, run_teacher_job  # noqa: E402
from lingua2_batch.training.train import TrainConfig, run_training  # noqa: E402
from tests.pipeline_fixtures import s3_server  # noqa: E402,F401 - a fixture this module's tests use
from tests.training_fixtures import FUNCTION_WORDS, FakeTeacher, drop_function_words, english_corpus_texts  # noqa: E402

HELD_OUT = slice(1, None, 6)  # every sixth document is kept out of training


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    # Ray's workers write the S3 outputs: they get the loopback server's endpoint and credentials
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": s3_server.env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pipeline(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    texts = english_corpus_texts()
    test_docs = texts[HELD_OUT]
    train_docs = [t for t in texts if t not in test_docs]
    for name, docs in (("train", train_docs), ("test", test_docs)):
        (root / "raw" / name).mkdir(parents=True)
        pq.write_table(
            pa.table({"id": [f"{name}-{i}" for i in range(len(docs))], "text": docs}),
            root / "raw" / name / "docs.parquet",
        )
    out = {"root": root, "test_texts": test_docs}
    with FakeTeacher(failures=[429, 500, 503]) as server:
        teacher = TeacherConfig(
            base_url=server.base_url, model="rule-teacher", chunk_tokens=256, max_concurrency=4,
            backoff_initial_s=0.01, backoff_max_s=0.05, cache_dir=str(root / "cache"),
        )
        for name in ("train", "test"):
            run_teacher_job(str(root / "raw" / name), str(root / "pairs" / name), teacher, id_column="id", num_workers=1)
        out["first_run_requests"] = len(server.requests)
        out["statuses"] = list(server.statuses)
        run_teacher_job(str(root / "raw" / "train"), str(root / "pairs" / "rerun"), teacher, id_column="id")
        out["rerun_requests"] = len(server.requests) - out["first_run_requests"]
    for name in ("train", "test"):
        run_label_job(str(root / "pairs" / name), str(root / "labelled" / name), id_column="id")
        out[f"filter_{name}"] = run_filter_job(str(root / "labelled" / name), str(root / "filtered" / name))
    base = build_checkpoint(root / "base", "sentencepiece")
    out["base"] = str(base)
    out["train_config"] = TrainConfig(
        base_model=str(base), train_data=str(root / "filtered" / "train" / "dataset"),
        output_dir=str(root / "trained"), max_length=128, epochs=4, batch_size=16,
        learning_rate=1e-3, warmup_ratio=0.05, num_threads=2, log_every=3,
    )
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        out["training"] = run_training(out["train_config"])
    out["training_lines"] = [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]
    return out


def test_teacher_job_writes_meetingbank_schema_retries_and_caches(pipeline):
    pairs = pq.read_table(str(pipeline["root"] / "pairs" / "train"))
    assert {"prompt", "compressed_prompt", "prompt_list", "compressed_prompt_list", "id"} <= set(pairs.column_names)
    assert pipeline["statuses"][:3] == [429, 500, 503]  # scripted failures were retried
    assert pipeline["rerun_requests"] == 0  # the rerun was answered from the cache
    for row in pairs.to_pylist():
        assert len(row["prompt_list"]) == len(row["compressed_prompt_list"]) >= 1
        for chunk, compressed in zip(row["prompt_list"], row["compressed_prompt_list"]):
            assert compressed == drop_function_words(chunk)[0]


def test_labels_match_the_rule_and_filter_keeps_clean_data(pipeline):
    labelled = read_labelled(str(pipeline["root"] / "labelled" / "train"))
    assert labelled.num_rows > 20
    for row in labelled.to_pylist():
        assert row["labels"] == drop_function_words(row["text"])[1]
        assert row["variation_rate"] == 0.0 and row["alignment_gap"] == 0.0
    summary = pipeline["filter_train"]
    assert summary["n_kept"] == summary["n_input"] == labelled.num_rows
    import datasets

    dataset = datasets.load_from_disk(str(pipeline["root"] / "filtered" / "train" / "dataset"))
    assert len(dataset) == labelled.num_rows and "labels" in dataset.column_names


def test_trained_from_scratch_reaches_95_percent_on_held_out_documents(pipeline):
    trained = Path(pipeline["train_config"].output_dir)
    assert (trained / "model.safetensors").exists()
    evaluation = evaluate_checkpoint(
        str(trained), str(pipeline["root"] / "filtered" / "test" / "dataset"), rates=[0.5], max_length=128
    )
    print("E2E_HELD_OUT", json.dumps(evaluation["token_metrics"]))
    assert evaluation["token_metrics"]["accuracy"] >= 0.95
    assert evaluation["token_metrics"]["f1"] >= 0.95
    (achieved,) = evaluation["compression"]
    assert achieved["ratio"] > 1.5
    metrics = json.loads((trained / "training_metrics.json").read_text())
    best = max(h["val_f1"] for h in metrics["history"])
    assert metrics["best_val_f1"] == best
    # progress: a line every log_every steps of each epoch, then the epoch's record
    lines = pipeline["training_lines"]
    steps = [(line["epoch"], line["step"]) for line in lines if "step" in line]
    in_epoch = lines[0]["steps_in_epoch"]
    assert steps == [(epoch, step) for epoch in range(1, 5) for step in range(3, in_epoch + 1, 3)]
    assert [line["epoch"] for line in lines if "val_f1" in line] == [1, 2, 3, 4]
    rates = [line["learning_rate"] for line in lines if "step" in line]
    assert rates[0] > rates[-1] >= 0  # decaying linearly after the warmup
    assert all(line["train_loss_running"] > 0 for line in lines if "step" in line)


def _function_word_exclusion(results) -> tuple[float, float]:
    function_total = function_dropped = content_total = content_kept = 0
    for result in results:
        for context in result.contexts:
            for word, label in zip(context.words, context.labels.tolist()):
                if word.casefold() in FUNCTION_WORDS:
                    function_total += 1
                    function_dropped += label == 0
                elif any(c.isalnum() for c in word):
                    content_total += 1
                    content_kept += label == 1
    return function_dropped / function_total, content_kept / content_total


def held_out_passages(texts: list[str], sentences_per_passage: int = 3) -> list[str]:
    """Short passages (one model window each) of the held-out documents' English sentences."""
    sentences = [
        s.strip() for text in texts for s in re.split(r"(?<=[.!?])\s+|\n+", text)
        if len(s.split()) >= 5 and any(w.casefold() in FUNCTION_WORDS for w in s.split())
    ]
    return [" ".join(sentences[i : i + sentences_per_passage]) for i in range(0, len(sentences), sentences_per_passage)]


def test_compressor_with_trained_checkpoint_drops_function_words(pipeline):
    trained = pipeline["train_config"].output_dir
    compressor = Compressor(trained)
    embeddings = compressor.loaded.model.get_input_embeddings().weight.shape[0]
    assert embeddings >= len(compressor.loaded.tokenizer) + 100  # the [NEWi] placeholder rows
    assert compressor.frame.max_length == 128  # the training window, recorded in the tokenizer config
    counter = resolve_token_counter("cl100k_base")
    passages = held_out_passages(pipeline["test_texts"])
    assert len(passages) >= 15
    results = []
    for passage in passages:  # each at the rate the rule achieves on it
        rule_rate = counter.count(drop_function_words(passage)[0]) / counter.count(passage)
        results.append(compressor.compress(passage, rate=rule_rate))
    dropped, kept = _function_word_exclusion(results)
    print("E2E_COMPRESS", json.dumps({"passages": len(passages), "function_words_dropped": dropped, "content_words_kept": kept}))
    assert dropped >= 0.9
    assert kept >= 0.9
    # the compat mode (force-token placeholders) loads the checkpoint without resizing it
    compat = Compressor(trained, compat="llmlingua")
    assert compat.loaded.model.get_input_embeddings().weight.shape[0] == embeddings
    assert compat.compress(passages[0], rate=0.6, force_tokens=["\n"]).compressed_prompt


def test_same_loop_under_ray_train_torchtrainer(pipeline, tmp_path):
    config = TrainConfig(**{**pipeline["train_config"].__dict__, "output_dir": str(tmp_path / "ray_trained"), "epochs": 1, "num_threads": 1})
    summary = run_training(config, num_workers=2, resources_per_worker={"CPU": 1}, storage_path=str(tmp_path / "runs"))
    assert summary["best_epoch"] == 1 and 0.0 < summary["best_val_f1"] <= 1.0
    result = Compressor(str(tmp_path / "ray_trained")).compress(pipeline["test_texts"][0], rate=0.5)
    assert 0 < result.compressed_tokens < result.origin_tokens


def test_batch_job_with_trained_checkpoint_compresses_accordingly(pipeline, tmp_path):
    from lingua2_batch.pipeline import JobConfig, run_job
    from tests.pipeline_fixtures import local_job_settings, read_output

    passages = held_out_passages(pipeline["test_texts"])
    counter = resolve_token_counter("cl100k_base")
    rule_rate = float(np.mean([counter.count(drop_function_words(p)[0]) / counter.count(p) for p in passages]))
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [f"p{i:03d}" for i in range(len(passages))], "text": passages}), tmp_path / "in" / "part.parquet")
    trained = pipeline["train_config"].output_dir
    report = run_job(JobConfig.from_mapping({**local_job_settings, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                                             "model": trained, "rate": rule_rate}))
    assert report.ok
    rows = read_output(str(tmp_path / "out")).to_pylist()
    expected = Compressor(trained).compress_batch(passages, rate=rule_rate)
    assert [r["compressed_text"] for r in rows] == [e.compressed_prompt for e in expected]
    dropped, kept = _function_word_exclusion(expected)
    print("E2E_BATCH_JOB", json.dumps({"rate": rule_rate, "function_words_dropped": dropped, "content_words_kept": kept}))
    assert dropped >= 0.9 and kept >= 0.9


def _labelled_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: (row["doc_id"], row["chunk_index"]))


def test_label_and_filter_jobs_write_to_an_object_store(ray_cluster, s3_server, tmp_path):
    """The filter job as the reviewer ran it (default ``save_dataset: true``) with an ``s3://`` output:
    ``parquet/``, ``dataset/`` and ``filter_summary.json`` under the prefix, the same rows as a local run."""
    texts = english_corpus_texts()[:12]
    compressed = [drop_function_words(t)[0] for t in texts]
    compressed[:3] = [c + " zebra quantum nebula" for c in compressed[:3]]  # teacher noise the filter drops
    (tmp_path / "pairs").mkdir()
    pq.write_table(pa.table({"prompt": texts, "prompt_list": [[t] for t in texts], "compressed_prompt_list": [[c] for c in compressed]}),
                   tmp_path / "pairs" / "pairs.parquet")
    run_label_job(str(tmp_path / "pairs"), "s3://corpus/labelled")

    spec = importlib.util.spec_from_file_location("job_train_filter", Path(__file__).resolve().parents[1] / "jobs" / "train_filter.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        job.main(["--set", "input=s3://corpus/labelled", "--set", "output=s3://corpus/filtered", "--set", "vr_percentile=80"])
    summary = json.loads(printed.getvalue())
    assert 0 < summary["n_kept"] < summary["n_input"] == len(texts)

    fs = s3_server.filesystem()
    assert json.loads(fs.cat("corpus/filtered/filter_summary.json")) == summary
    assert fs.find("corpus/filtered/parquet") and fs.exists("corpus/filtered/dataset/state.json")
    local = run_filter_job("s3://corpus/labelled", str(tmp_path / "filtered"), vr_percentile=80)
    assert local == summary
    expected = _labelled_rows(read_labelled(str(tmp_path / "filtered" / "dataset")))
    assert len(expected) == summary["n_kept"]
    assert _labelled_rows(read_labelled("s3://corpus/filtered/dataset")) == expected
    assert _labelled_rows(read_labelled("s3://corpus/filtered/parquet")) == expected

    # save_dataset: false writes the Parquet straight into the output, and nothing else (as documented)
    run_filter_job("s3://corpus/labelled", "s3://corpus/flat", vr_percentile=80, save_dataset=False)
    names = [name[len("corpus/flat/"):] for name in fs.find("corpus/flat") if name.rstrip("/") != "corpus/flat"]  # less the folder marker
    assert names and all("/" not in name and name.endswith(".parquet") for name in names), names
    assert _labelled_rows(read_labelled("s3://corpus/flat")) == expected
