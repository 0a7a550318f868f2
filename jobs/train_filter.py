"""Filtering stage (ray job submit entry point): drop labelled chunks whose variation rate, then
alignment gap, is above the given percentiles; write Parquet (<output>/parquet), a ``datasets.Dataset``
(<output>/dataset) and <output>/filter_summary.json, locally or on an object store. With
``save_dataset: false`` only the Parquet, directly into <output>.

    ray job submit --working-dir . -- python jobs/train_filter.py --config jobs/train_filter.yaml
"""

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import Keys, config_errors, init_ray, job_arguments, number, print_summary  # noqa: E402
from lingua2_batch.training.stages import run_filter_job  # noqa: E402

KEYS = Keys(required=("input", "output"), optional=("vr_percentile", "ag_percentile", "save_dataset", "ray_init"))


def main(argv: Sequence[str] | None = None) -> None:
    with config_errors():
        config = job_arguments(__doc__, KEYS, argv)
        options = {
            "vr_percentile": number(config, "vr_percentile", 95, float),
            "ag_percentile": number(config, "ag_percentile", 90, float),
            "save_dataset": bool(config.get("save_dataset", True)),
        }
    init_ray(config)
    print_summary(run_filter_job(config["input"], config["output"], **options))


if __name__ == "__main__":
    main()
