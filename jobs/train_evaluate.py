"""Evaluation (entry point): a trained checkpoint on held-out labelled data → token accuracy/F1
against the teacher's labels and achieved compression ratios at the given rates (JSON on stdout).

    ray job submit --working-dir . -- python jobs/train_evaluate.py --config jobs/train_evaluate.yaml
"""

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import Keys, config_errors, job_arguments, number, print_summary  # noqa: E402
from lingua2_batch.training.evaluate import evaluate_checkpoint  # noqa: E402

KEYS = Keys(required=("checkpoint", "data"),
            optional=("rates", "label_pieces", "max_length", "batch_size", "device", "max_documents"))


def main(argv: Sequence[str] | None = None) -> None:
    with config_errors():
        config = job_arguments(__doc__, KEYS, argv)
        options = {
            "rates": config.get("rates", [0.5]),
            "label_pieces": config.get("label_pieces", "all"),
            "max_length": number(config, "max_length", 512, int),
            "batch_size": number(config, "batch_size", 32, int),
            "device": config.get("device"),
            "max_documents": number(config, "max_documents", None, int),
        }
    print_summary(evaluate_checkpoint(config["checkpoint"], config["data"], **options))


if __name__ == "__main__":
    main()
