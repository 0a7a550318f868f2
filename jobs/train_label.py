"""Labelling stage (ray job submit entry point): teacher pairs (MeetingBank-LLMCompressed schema, ours
or the public dataset's Parquet) → one labelled row per chunk with variation rate and alignment gap.

    ray job submit --working-dir . -- python jobs/train_label.py --config jobs/train_label.yaml
"""

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import Keys, config_errors, init_ray, job_arguments, number, print_summary  # noqa: E402
from lingua2_batch.training.stages import run_label_job  # noqa: E402

KEYS = Keys(required=("input", "output"),
            optional=("window_size", "search_backward", "limit_jump", "id_column", "batch_size", "ray_init"))


def main(argv: Sequence[str] | None = None) -> None:
    with config_errors():
        config = job_arguments(__doc__, KEYS, argv)
        options = {
            "window_size": number(config, "window_size", 150, int),
            "search_backward": bool(config.get("search_backward", True)),
            "limit_jump": bool(config.get("limit_jump", True)),
            "id_column": config.get("id_column"),
            "batch_size": number(config, "batch_size", 64, int),
        }
    init_ray(config)
    print_summary(run_label_job(config["input"], config["output"], **options))


if __name__ == "__main__":
    main()
