"""Whole whitespace tokens (``atomic_tokens``) against word-level selection, measured on the shipped
corpus and a generated identifier-rich text with both scratch tokenizer families:

* how far each way of forming a token's probability from its words' (head, first, max, mean) departs from
  the word-level decisions (share of target-LLM tokens whose kept/dropped label differs);
* how closely each mode reaches the requested rate (mean |achieved - requested| per document);
* how many output whitespace tokens are fragments of an input token.

``python -m lingua2_batch.atomic_bench [--workdir DIR]`` prints one JSON line per measurement.
``identifier_rich_text`` is also what the tests compress.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .compressor import Compressor
from .core import extractive
from .core.options import CompressionOptions
from .model.scratch import build_checkpoint, shipped_corpus_texts

AGGREGATIONS = ("head", "first", "max", "mean")
RATES = (0.2, 0.33, 0.5, 0.7)
FAMILIES = ("sentencepiece", "wordpiece")

_FILLER = (
    "the", "service", "logs", "show", "that", "after", "deploy", "we", "saw", "errors", "from", "host", "and",
    "rolled", "back", "to", "while", "operators", "checked", "config", "in", "for", "user", "order", "ticket",
    "was", "opened", "by", "see", "details", "at", "with", "build", "hash", "release", "since",
)


def _identifiers(rng: random.Random) -> dict[str, Any]:
    hexdigits = "0123456789abcdef"
    words = ["app", "api", "billing", "auth", "worker", "ingest", "report", "cache", "queue", "edge"]

    def hex_string(n: int) -> str:
        return "".join(rng.choice(hexdigits) for _ in range(n))

    def pick() -> str:
        return rng.choice(words)

    return {
        "path": lambda: rng.choice([f"/var/log/{pick()}/{pick()}-{rng.randint(1, 31):02d}.log",
                                    f"~/.config/{pick()}/settings.toml", f"./scripts/{pick()}_{pick()}.sh",
                                    f"src/{pick()}/{pick()}.py", f"C:\\Users\\{pick()}\\{pick()}.txt"]),
        "url": lambda: rng.choice([f"https://{pick()}.example.com/{pick()}/{rng.randint(1, 9999)}?ref={pick()}",
                                   f"http://{pick()}.internal:{rng.randint(1024, 65535)}/healthz",
                                   f"s3://{pick()}-bucket/{pick()}/part-{rng.randint(0, 99):05d}.parquet"]),
        "ipv4": lambda: ".".join(str(rng.randint(0, 255)) for _ in range(4)) + rng.choice(["", f":{rng.randint(1, 65535)}", "/24"]),
        "ipv6": lambda: rng.choice([f"2001:db8::{hex_string(4)}:{hex_string(3)}", "::1", f"fe80::{hex_string(4)}%eth0",
                                    ":".join(hex_string(4) for _ in range(8))]),
        "email": lambda: f"{pick()}.{pick()}+{rng.randint(1, 99)}@{pick()}.example.org",
        "semver": lambda: rng.choice([f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
                                      f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 5)}",
                                      f"{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}+build.{rng.randint(1, 999)}"]),
        "timestamp": lambda: f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                             f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}" + rng.choice(["Z", "+02:00", ".123Z"]),
        "hash": lambda: hex_string(rng.choice([7, 12, 40])),
        "snake": lambda: f"{pick()}_{pick()}_{hex_string(6)}",
        "kebab": lambda: f"{pick()}-{pick()}-{rng.randint(1, 999)}",
        "camel": lambda: f"{pick()}{pick().capitalize()}{pick().capitalize()}",
        "number": lambda: rng.choice([f"{rng.randint(1, 999)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d}",
                                      f"${rng.randint(1, 99)},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}",
                                      f"{rng.randint(1, 99)}_{rng.randint(0, 999):03d}_{rng.randint(0, 999):03d}",
                                      f"{rng.randint(0, 100)}.{rng.randint(0, 9)}%"]),
    }


def identifier_rich_text(seed: int = 0, sentences: int = 60) -> str:
    """Prose-like sentences dense with identifiers of every kind the issue names, some in brackets
    or before a full stop, in paragraphs; deterministic for a seed."""
    rng = random.Random(seed)
    makers = _identifiers(rng)
    kinds = sorted(makers)
    paragraphs, sentence_list = [], []
    for index in range(sentences):
        tokens = [rng.choice(_FILLER) for _ in range(rng.randint(3, 8))]
        for kind in rng.sample(kinds, rng.randint(1, 3)):
            value = makers[kind]()
            if rng.random() < 0.2:
                value = f"({value})"
            tokens.insert(rng.randint(1, len(tokens)), value)
        sentence = " ".join(tokens)
        sentence_list.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ";", ":", "?"]))
        if index % 6 == 5:
            paragraphs.append(" ".join(sentence_list))
            sentence_list = []
    if sentence_list:
        paragraphs.append(" ".join(sentence_list))
    return "\n\n".join(paragraphs) + "\n"


def fragments(original: str, compressed: str) -> int:
    """Output whitespace tokens that are not whole input whitespace tokens."""
    whole = set(original.split())
    return sum(token not in whole for token in compressed.split())


def _word_labels(prepared: extractive.ExtractivePrepared, result: Any, atomic: bool) -> np.ndarray:
    """Per model word of the (single-context) prompt: kept or not, a unit's label given to its words."""
    context = prepared.contexts[0]
    labels = np.asarray(result.contexts[0].labels, dtype=bool) if result.contexts else np.zeros(0, bool)
    first = extractive.Units.of(context, atomic).first_word
    return np.repeat(labels, np.diff(np.append(first, context.n_words)))


def measure(compressor: Compressor, texts: list[str], corpus_name: str, family: str) -> Iterator[dict[str, Any]]:
    word_options = {"atomic_tokens": False}
    probe = compressor.prepare(texts, CompressionOptions(**word_options))
    chunk_lists = [extractive.model_chunks(p) for p in probe]
    scored = compressor.scorer.score_unpadded([c for chunks in chunk_lists for c in chunks])
    probabilities, position = [], 0
    for chunks in chunk_lists:
        probabilities.append(scored[position : position + len(chunks)])
        position += len(chunks)
    counter = compressor.counter
    word_tokens = [np.asarray(counter.count_words(p.contexts[0].word_texts()), np.int64) for p in probe]
    for rate in RATES:
        def run(atomic: bool, aggregation: str = extractive.UNIT_AGGREGATION) -> list[Any]:
            options = CompressionOptions(rate=rate, atomic_tokens=atomic)
            return [extractive.select(dataclasses.replace(p, options=options), probs, counter, unit_aggregation=aggregation).result
                    for p, probs in zip(probe, probabilities)]

        word_results = run(False)
        word_labels = [_word_labels(p, r, False) for p, r in zip(probe, word_results)]
        configurations = [("word", word_results)] + [(f"atomic-{a}", run(True, a)) for a in AGGREGATIONS]
        for name, results in configurations:
            differing = total = 0
            if name != "word":
                for p, r, reference, weights in zip(probe, results, word_labels, word_tokens):
                    differing += int(weights[_word_labels(p, r, True) != reference].sum())
                    total += int(weights.sum())
            errors = [abs(r.rate - rate) for r in results if r.origin_tokens]
            yield {
                "measured": "atomic tokens vs word-level selection", "corpus": corpus_name, "family": family,
                "rate": rate, "mode": name,
                "tokens_labelled_unlike_word_level": round(differing / total, 4) if total else 0.0,
                "mean_abs_rate_error": round(float(np.mean(errors)), 4),
                "achieved_rate": round(sum(r.compressed_tokens for r in results) / sum(r.origin_tokens for r in results), 4),
                "fragment_tokens": sum(fragments(t, r.compressed_prompt) for t, r in zip(texts, results)),
                "output_tokens": sum(len(r.compressed_prompt.split()) for r in results),
            }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="where scratch checkpoints are built (default: a temporary folder)")
    parser.add_argument("--model", default=None, help="measure this checkpoint instead of the two scratch ones")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.workdir or scratch)
        corpora = {"shipped": shipped_corpus_texts(), "identifiers": [identifier_rich_text(seed) for seed in range(8)]}
        models = {"given": args.model} if args.model else {}
        for family in () if args.model else FAMILIES:
            path = root / f"atomic-bench-{family}"
            if not (path / "config.json").exists():
                build_checkpoint(path, family)
            models[family] = str(path)
        for family, model in models.items():
            compressor = Compressor(model)
            for name, texts in corpora.items():
                for line in measure(compressor, texts, name, family):
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
