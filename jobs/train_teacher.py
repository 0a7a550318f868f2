"""Teacher stage (ray job submit entry point): Parquet with a text column → (prompt, compressed_prompt,
prompt_list, compressed_prompt_list) Parquet from an OpenAI-compatible chat endpoint.

    ray job submit --working-dir . -- python jobs/train_teacher.py --config jobs/train_teacher.yaml
"""

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import Keys, config_errors, init_ray, job_arguments, number, print_summary  # noqa: E402
from lingua2_batch.training.teacher import TeacherConfig, run_teacher_job  # noqa: E402

KEYS = Keys(required=("input", "output"),
            optional=("teacher", "text_column", "id_column", "num_workers", "batch_size", "ray_init"),
            sections={"teacher": Keys.of(TeacherConfig)})


def main(argv: Sequence[str] | None = None) -> None:
    with config_errors():
        config = job_arguments(__doc__, KEYS, argv)
        teacher = config.get("teacher") or {}
        TeacherConfig(**teacher).resolved()  # no model, no endpoint: say so before starting Ray
        options = {
            "text_column": config.get("text_column", "text"),
            "id_column": config.get("id_column"),
            "num_workers": number(config, "num_workers", 1, int),
            "batch_size": number(config, "batch_size", 16, int),
        }
    init_ray(config)
    print_summary(run_teacher_job(config["input"], config["output"], teacher, **options))


if __name__ == "__main__":
    main()
