"""Training stage (ray job submit entry point): fine-tune an encoder for drop/keep token
classification on filtered labelled data; the best checkpoint (validation F1) lands in output_dir,
ready for ``Compressor`` and the batch job. ``num_workers: 0`` trains in the driver process; N > 0
runs the same loop data-parallel under Ray Train's TorchTrainer. An ``evaluate`` section, if present,
evaluates the result on held-out data afterwards.

    ray job submit --working-dir . -- python jobs/train_model.py --config jobs/train_model.yaml
"""

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import Keys, config_errors, init_ray, job_arguments, number, print_summary  # noqa: E402
from lingua2_batch.training.train import TrainConfig, run_training  # noqa: E402

KEYS = Keys(
    required=("train",),
    optional=("num_workers", "use_gpu", "resources_per_worker", "storage_path", "ray_init", "evaluate"),
    sections={
        "train": Keys.of(TrainConfig, required=("base_model", "train_data", "output_dir")),
        "evaluate": Keys(required=("data",), optional=("rates",)),
    },
)


def main(argv: Sequence[str] | None = None) -> None:
    with config_errors():
        config = job_arguments(__doc__, KEYS, argv)
        train = TrainConfig(**config["train"])  # its own checks (label_pieces, numbers) before any work
        num_workers = number(config, "num_workers", 0, int)
    if num_workers:
        init_ray(config)
    summary = run_training(
        train,
        num_workers=num_workers or None,
        use_gpu=bool(config.get("use_gpu", False)),
        resources_per_worker=config.get("resources_per_worker"),
        storage_path=config.get("storage_path"),
    )
    evaluation = config.get("evaluate")
    if evaluation:
        from lingua2_batch.training.evaluate import evaluate_checkpoint

        summary["evaluation"] = evaluate_checkpoint(
            train.output_dir,
            evaluation["data"],
            rates=evaluation.get("rates", [0.5]),
            label_pieces=train.label_pieces,
            max_length=train.max_length,
        )
    print_summary(summary)


if __name__ == "__main__":
    main()
