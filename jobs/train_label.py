"""Labelling stage (ray job submit entry point): teacher pairs (MeetingBank-LLMCompressed schema, ours
or the public dataset's Parquet) → one labelled row per chunk with variation rate and alignment gap.

    ray job submit --working-dir . -- python jobs/train_label.py --config jobs/train_label.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import init_ray, job_arguments, print_summary  # noqa: E402
from lingua2_batch.training.stages import run_label_job  # noqa: E402


def main(argv=None):
    config = job_arguments(__doc__, argv)
    init_ray(config)
    summary = run_label_job(
        config["input"],
        config["output"],
        window_size=int(config.get("window_size", 150)),
        search_backward=bool(config.get("search_backward", True)),
        limit_jump=bool(config.get("limit_jump", True)),
        id_column=config.get("id_column"),
        batch_size=int(config.get("batch_size", 64)),
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
