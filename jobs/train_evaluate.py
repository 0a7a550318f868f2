"""Evaluation (entry point): a trained checkpoint on held-out labelled data → token accuracy/F1
against the teacher's labels and achieved compression ratios at the given rates (JSON on stdout).

    ray job submit --working-dir . -- python jobs/train_evaluate.py --config jobs/train_evaluate.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import job_arguments, print_summary  # noqa: E402
from lingua2_batch.training.evaluate import evaluate_checkpoint  # noqa: E402


def main(argv=None):
    config = job_arguments(__doc__, argv)
    summary = evaluate_checkpoint(
        config["checkpoint"],
        config["data"],
        rates=config.get("rates", [0.5]),
        label_pieces=config.get("label_pieces", "all"),
        max_length=int(config.get("max_length", 512)),
        batch_size=int(config.get("batch_size", 32)),
        device=config.get("device"),
        max_documents=config.get("max_documents"),
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
