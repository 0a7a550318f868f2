"""``lingua2-batch bench`` end to end on a tiny scratch model: both sides run, every measure is
reported, and compat mode's outputs are identical to the reference's."""

from __future__ import annotations

import json

import pytest

from lingua2_batch.cli import main

MEASURES = {
    "records_per_second", "tokens_per_second", "peak_memory_growth_mib", "model_share_of_wall_time",
    "outside_model_share_of_wall_time", "padding_share_of_model_tokens", "speedup_ceiling",
    "identical_compressed_prompts", "chunks_rescored_canonically",
}


@pytest.mark.parametrize("compat", ["llmlingua", "none"])
def test_bench_reports_every_measure(compat, capsys):
    code = main(["bench", "--size", "tiny", "--unit", "paragraphs", "--documents", "12", "--runs", "2",
                 "--compat", compat])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_measure = {line["measure"]: line for line in lines}
    assert set(by_measure) == MEASURES
    speed = by_measure["records_per_second"]
    assert speed["records"] == 12 and speed["ours"] > 0 and speed["reference"] > 0
    assert speed["speedup"] == pytest.approx(speed["ours"] / speed["reference"], rel=0.02)
    ceiling = by_measure["speedup_ceiling"]
    assert set(ceiling["irreducible_seconds"]) == {"tokenizer", "token_counts", "model"}
    assert all(v > 0 for v in ceiling["irreducible_seconds"].values())
    assert ceiling["ceiling"] > 0
    identical = by_measure["identical_compressed_prompts"]
    if compat == "llmlingua":
        assert identical["ours"] == identical["of"] == 12
    padding = by_measure["padding_share_of_model_tokens"]
    assert padding["reference"] > padding["ours"]  # the reference pads every passage to 512
