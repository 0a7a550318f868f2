"""Teacher stage (ray job submit entry point): Parquet with a text column → (prompt, compressed_prompt,
prompt_list, compressed_prompt_list) Parquet from an OpenAI-compatible chat endpoint.

    ray job submit --working-dir . -- python jobs/train_teacher.py --config jobs/train_teacher.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import init_ray, job_arguments, print_summary  # noqa: E402
from lingua2_batch.training.teacher import run_teacher_job  # noqa: E402


def main(argv=None):
    config = job_arguments(__doc__, argv)
    init_ray(config)
    summary = run_teacher_job(
        config["input"],
        config["output"],
        config.get("teacher", {}),
        text_column=config.get("text_column", "text"),
        id_column=config.get("id_column"),
        num_workers=int(config.get("num_workers", 1)),
        batch_size=int(config.get("batch_size", 16)),
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
