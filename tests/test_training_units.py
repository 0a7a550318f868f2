"""Training wing units, no Ray: word split, alignment on pairs whose labels are known by construction,
quality metrics and the percentile filter, chunking, instructions, example building, the teacher
client against a loopback OpenAI-protocol server (retries on 429/5xx, cache, failures), and the jobs'
configuration checks (unknown or missing keys refused before Ray starts)."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lingua2_batch.core.token_counting import resolve_token_counter
from lingua2_batch.model.scratch import build_tokenizer, shipped_corpus_texts
from lingua2_batch.training.chunking import chunk_text
from lingua2_batch.training.config import load_config
from lingua2_batch.training.instructions import load_instruction
from lingua2_batch.training.labeling import (
    AlignmentConfig,
    align_words,
    filter_thresholds,
    keep_mask,
    label_pair,
    split_words,
    word_spans,
)
from lingua2_batch.training.teacher import TeacherClient, TeacherConfig, TeacherError
from lingua2_batch.training.train import IGNORE_INDEX, build_examples, piece_labels
from tests.training_fixtures import FakeTeacher, corpus_sentences, drop_function_words, english_corpus_texts

CONFIGS = [
    AlignmentConfig(),  # upstream: backward search, limited jumps, window 150
    AlignmentConfig(window_size=40),
    AlignmentConfig(window_size=1000, search_backward=False, limit_jump=False),
]


def test_word_split_peels_punctuation_and_splits_cjk():
    assert split_words("The Council, (approved) 3.5% of $1,200 don't. v2.4.12") == [
        "The", "Council", ",", "(", "approved", ")", "3.5", "%", "of", "$", "1,200", "don't", ".", "v2.4.12"]
    assert split_words("会议决定，明天 开会。") == ["会", "议", "决", "定", "，", "明", "天", "开", "会", "。"]
    text = "  a  b\n c "
    assert [text[s:e] for s, e in word_spans(text)] == ["a", "b", "c"]


def _delete_types(text: str, rng: random.Random, share: float) -> tuple[str, list[int]]:
    """Delete every occurrence (case-insensitively) of a random set of word types: the right labels
    are known by construction and no kept word equals a deleted one."""
    words = split_words(text)
    types = sorted({w.casefold() for w in words})
    deleted = {t for t in types if rng.random() < share}
    labels = [0 if w.casefold() in deleted else 1 for w in words]
    return " ".join(w for w, keep in zip(words, labels) if keep), labels


@pytest.mark.parametrize("config", CONFIGS, ids=["upstream", "window40", "forward-only"])
def test_alignment_recovers_labels_known_by_construction(config):
    rng = random.Random(7)
    sentences = corpus_sentences()
    checked = 0
    for i in range(0, 400, 4):
        passage = " ".join(sentences[i : i + 4])
        for share in (0.1, 0.3, 0.6):
            compressed, expected = _delete_types(passage, rng, share)
            assert label_pair(passage, compressed, config).labels == expected
            checked += 1
    # whole documents (thousands of words) with the function-word rule, deletion runs included
    for text in shipped_corpus_texts():
        compressed, expected = drop_function_words(text)
        sample = label_pair(text, compressed, config)
        assert sample.labels == expected
        assert sample.variation_rate == 0.0 and sample.alignment_gap == 0.0
        checked += 1
    assert checked > 300


def test_alignment_is_case_insensitive_and_labels_each_word_once():
    assert align_words(["The", "the", "THE", "cat"], ["the", "the"]) == [1, 1, 0, 0]
    assert align_words(["Budget", "approved"], ["BUDGET", "Approved", "approved"]) == [1, 1]
    assert align_words([], ["x"]) == []


def test_window_limits_how_far_a_match_is_searched():
    original = ["x"] * 30 + ["target"]
    assert align_words(original, ["target"], AlignmentConfig(window_size=10, search_backward=False))[-1] == 0
    assert align_words(original, ["target"], AlignmentConfig(window_size=40, search_backward=False))[-1] == 1


def test_quality_metrics_follow_upstream_definitions():
    # 2 of 4 compressed words are new: variation rate 0.5
    sample = label_pair("alpha beta gamma delta", "alpha novel gamma invented")
    assert sample.labels == [1, 0, 1, 0]
    assert sample.variation_rate == pytest.approx(0.5)
    assert sample.hitting_rate == pytest.approx(2 / 4) and sample.matching_rate == pytest.approx(2 / 4)
    assert sample.alignment_gap == pytest.approx(0.0)
    # a word found in the original but outside the window: hit, not matched → alignment gap > 0
    original = "start " + " ".join(f"w{i}" for i in range(300)) + " far"
    sample = label_pair(original, "start far", AlignmentConfig(window_size=20))
    assert sample.hitting_rate == pytest.approx(2 / 302) and sample.matching_rate == pytest.approx(1 / 302)
    assert sample.alignment_gap == pytest.approx(1 / 302)
    assert label_pair("a b", "").variation_rate == 1.0  # an empty compression is all variation


def test_filter_drops_top_variation_then_top_alignment_gap():
    rng = np.random.default_rng(0)
    vr = rng.uniform(0, 0.2, 1000)
    ag = rng.uniform(0, 0.1, 1000)
    thresholds = filter_thresholds(vr, ag)  # paper defaults: 95th VR percentile, then 90th AG percentile
    mask = keep_mask(vr, ag, thresholds)
    assert thresholds.n_after_variation == 950
    assert thresholds.n_kept == int(mask.sum()) == 855
    assert not mask[vr > thresholds.variation_rate].any()
    # a clean dataset (all zeros) loses nothing; upstream's ">=" would drop everything
    clean = filter_thresholds(np.zeros(50), np.zeros(50))
    assert clean.n_kept == 50
    assert filter_thresholds(vr, ag, 100, 100).n_kept == 1000


def test_chunks_fit_the_token_budget_and_end_at_sentences():
    counter = resolve_token_counter("cl100k_base")
    for text in english_corpus_texts()[:10]:
        chunks = chunk_text(text, 128, counter)
        assert all(counter.count(c) <= 128 for c in chunks)
        assert "".join(text.split()) == "".join("".join(chunks).split())  # nothing lost or reordered
        ends_at_sentence = [c.endswith((".", "!", "?")) for c in chunks[:-1]]
        assert not ends_at_sentence or np.mean(ends_at_sentence) > 0.5
    long_word = "x" * 5000
    assert all(counter.count(c) <= 64 for c in chunk_text(long_word, 64, counter))


def test_default_instruction_is_the_papers_prompt_4():
    instruction = load_instruction()
    messages = instruction.messages("Some {braces} text")
    assert messages[0] == {"role": "system", "content": instruction.system_prompt}
    assert instruction.system_prompt.startswith("You are an excellent linguist")
    assert "Some {braces} text\nThe compressed text is: " in messages[1]["content"]
    assert load_instruction(3).messages("t")[1]["content"] == "t"
    with pytest.raises(ValueError):
        load_instruction(9)


def test_piece_labels_first_and_all_mask_specials_and_padding():
    tokenizer = build_tokenizer("sentencepiece", shipped_corpus_texts())
    text = "The councilmembers approved unanimously."
    sample = label_pair(text, "councilmembers approved unanimously.")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    first, word_of = piece_labels(text, sample.word_starts, sample.word_ends, sample.labels, encoding["offset_mapping"], "first")
    every, _ = piece_labels(text, sample.word_starts, sample.word_ends, sample.labels, encoding["offset_mapping"], "all")
    assert (every != IGNORE_INDEX).all()
    for k in range(len(word_of)):
        is_first = k == 0 or word_of[k] != word_of[k - 1]
        assert (first[k] != IGNORE_INDEX) == is_first
        assert every[k] == sample.labels[word_of[k]]
    table = pa.Table.from_pylist([sample.as_row()])
    (ids, labels), = build_examples(tokenizer, table, 64, "all")
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # <s> and </s>
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    windows = build_examples(tokenizer, pa.Table.from_pylist([label_pair(text * 20, "").as_row()]), 16, "first")
    assert len(windows) > 1 and all(len(i) <= 16 for i, _ in windows)


def _client(server: FakeTeacher, tmp_path=None, **overrides) -> TeacherClient:
    config = TeacherConfig(base_url=server.base_url, model="rule-teacher", backoff_initial_s=0.001, backoff_max_s=0.01,
                           cache_dir=str(tmp_path / "cache") if tmp_path else None, **overrides)
    return TeacherClient(config)


def test_teacher_client_retries_429_and_5xx_then_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chunk = "The council approved the budget for the parks."
    with FakeTeacher(failures=[429, 500, 502]) as server:
        client = _client(server, tmp_path)
        assert client.compress(chunk) == drop_function_words(chunk)[0]
        assert server.statuses == [429, 500, 502, 200]
        assert client.stats["retries"] == 3
        body = server.requests[-1]["body"]
        assert body["temperature"] == 0.3 and body["model"] == "rule-teacher"
        assert body["messages"][0]["content"].startswith("You are an excellent linguist")
        assert server.requests[-1]["auth"] == "Bearer sk-test"
        # a rerun (new client, same cache) pays nothing
        again = _client(server, tmp_path)
        assert again.compress_many([chunk]) == [client.compress(chunk)]
        assert len(server.requests) == 4 and again.stats["cache_hits"] == 1


def test_teacher_client_gives_up_on_client_errors_and_after_max_retries():
    with FakeTeacher(failures=[400]) as server:
        with pytest.raises(TeacherError, match="HTTP 400"):
            _client(server).compress("text")
        assert len(server.requests) == 1  # not retried
    with FakeTeacher(failures=[503] * 10) as server:
        with pytest.raises(TeacherError, match="after 3 attempts"):
            _client(server, max_retries=2).compress("text")
        assert len(server.requests) == 3


def test_teacher_client_runs_requests_concurrently():
    chunks = [f"Item {i} is on the agenda for the meeting." for i in range(20)]
    with FakeTeacher(failures=[429] * 5) as server:
        outputs = _client(server, max_concurrency=4).compress_many(chunks)
    assert outputs == [drop_function_words(c)[0] for c in chunks]


# -- job configuration ---------------------------------------------------------------------------

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def _with_config(name: str, argv: list[str]) -> list[str]:
    """The job's own YAML (every required key given), then ``argv``. For the training job also no Ray
    workers and a missing base model, so that a job which missed the fault fails at once instead of
    training or waiting for the YAML's GPUs."""
    config = ["--config", str(JOBS / f"{name}.yaml")]
    if name == "train_model":
        config += ["--set", "num_workers=0", "--set", f"train.base_model={JOBS / 'no-such-model'}"]
    return [*config, *argv]


def _run_job_main(name: str, argv: list[str], capsys) -> tuple[int, str]:
    """Run ``jobs/<name>.py``'s ``main`` in this process; (exit code, stderr). Ray must not have started."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        with pytest.raises(SystemExit) as exited:
            module.main(argv)
    finally:
        ray = sys.modules.get("ray")
        started = ray is not None and ray.is_initialized()
        if started:
            ray.shutdown()
    assert not started, "the job started Ray before checking its configuration"
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "name, argv, unknown, known",
    [
        ("train_label", ["--set", "window_sise=10"], "'window_sise'", "window_size"),
        ("train_filter", ["--set", "vr_percentil=99"], "'vr_percentil'", "vr_percentile"),
        ("train_teacher", ["--set", "teacher.modle=x"], "'teacher.modle'", "model"),
        ("train_model", ["--set", "evaluate.rate=[0.3]"], "'evaluate.rate'", "data, rates"),
        ("train_model", ["--set", "train.epoch=1"], "'train.epoch'", "epochs"),
        ("train_evaluate", ["--set", "rate=[0.3]"], "'rate'", "rates"),
    ],
)
def test_job_refuses_unknown_config_keys_before_ray(name, argv, unknown, known, capsys):
    code, err = _run_job_main(name, _with_config(name, argv), capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "invalid configuration: unknown config key " + unknown in err and known in err


@pytest.mark.parametrize(
    "name, argv, missing",
    [
        ("train_label", [], "'input', 'output' (no --config given"),
        ("train_filter", ["--set", "input=in"], "'output' (no --config given"),
        ("train_model", _with_config("train_model", ["--set", "train.output_dir=null"]), "'train.output_dir' (in "),
        ("train_model", ["--set", "num_workers=0"], "'train.base_model', 'train.train_data', 'train.output_dir'"),
        ("train_evaluate", ["--set", "checkpoint=ckpt"], "'data'"),
    ],
)
def test_job_refuses_missing_config_or_required_keys_before_ray(name, argv, missing, capsys):
    code, err = _run_job_main(name, argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "invalid configuration: missing required config key" in err and missing in err


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("train_label", ["--set", "window_size=wide"], "'window_size' must be an integer, got 'wide'"),
        ("train_model", ["--set", "train.epochs=many"], "epochs must be an integer, got 'many'"),
        ("train_model", ["--set", "train.output_dir=s3://bucket/ckpt"], "output_dir must be a local"),
        ("train_teacher", ["--set", "teacher.cache_dir=s3://bucket/cache"], "cache_dir must be a local"),
        ("train_label", ["--config", "/nonexistent/label.yaml"], "No such file or directory"),
        ("train_label", ["--set", "window_size"], "override 'window_size' is not KEY=VALUE"),
        ("train_model", ["--set", "train=x", "--set", "train.epochs=1"], "'train' is not a mapping"),
    ],
)
def test_job_refuses_bad_config_values_before_ray(name, argv, message, capsys):
    code, err = _run_job_main(name, argv if "--config" in argv else _with_config(name, argv), capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_job_config_error_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    # as the reviewer ran it: no --config at all
    run = subprocess.run([sys.executable, str(JOBS / "train_label.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "train_label.py: invalid configuration: missing required config keys 'input', 'output' "
        "(no --config given; use --config FILE or --set KEY=VALUE)"
    ]
    assert run.stdout == ""


def test_overrides_fill_an_empty_yaml_section(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("train:\n  epochs: 2\nevaluate:\n", encoding="utf-8")
    config = load_config(str(path), ["evaluate.rates=[0.3]", "train.batch_size=4"])
    assert config == {"train": {"epochs": 2, "batch_size": 4}, "evaluate": {"rates": [0.3]}}
