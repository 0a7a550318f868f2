"""Filtering stage (ray job submit entry point): drop labelled chunks whose variation rate, then
alignment gap, is above the given percentiles; write Parquet (<output>/parquet) and a
``datasets.Dataset`` (<output>/dataset, local output only).

    ray job submit --working-dir . -- python jobs/train_filter.py --config jobs/train_filter.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import init_ray, job_arguments, print_summary  # noqa: E402
from lingua2_batch.training.stages import run_filter_job  # noqa: E402


def main(argv=None):
    config = job_arguments(__doc__, argv)
    init_ray(config)
    summary = run_filter_job(
        config["input"],
        config["output"],
        vr_percentile=float(config.get("vr_percentile", 95)),
        ag_percentile=float(config.get("ag_percentile", 90)),
        save_dataset=bool(config.get("save_dataset", True)),
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
