"""Training stage (ray job submit entry point): fine-tune an encoder for drop/keep token
classification on filtered labelled data; the best checkpoint (validation F1) lands in output_dir,
ready for ``Compressor`` and the batch job. ``num_workers: 0`` trains in the driver process; N > 0
runs the same loop data-parallel under Ray Train's TorchTrainer. An ``evaluate`` section, if present,
evaluates the result on held-out data afterwards.

    ray job submit --working-dir . -- python jobs/train_model.py --config jobs/train_model.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua2_batch.training.config import init_ray, job_arguments, print_summary  # noqa: E402
from lingua2_batch.training.train import run_training  # noqa: E402


def main(argv=None):
    config = job_arguments(__doc__, argv)
    num_workers = int(config.get("num_workers", 0))
    if num_workers:
        init_ray(config)
    summary = run_training(
        config["train"],
        num_workers=num_workers or None,
        use_gpu=bool(config.get("use_gpu", False)),
        resources_per_worker=config.get("resources_per_worker"),
        storage_path=config.get("storage_path"),
    )
    evaluation = config.get("evaluate")
    if evaluation:
        from lingua2_batch.training.evaluate import evaluate_checkpoint

        summary["evaluation"] = evaluate_checkpoint(
            config["train"]["output_dir"],
            evaluation["data"],
            rates=evaluation.get("rates", [0.5]),
            label_pieces=config["train"].get("label_pieces", "all"),
            max_length=config["train"].get("max_length", 512),
        )
    print_summary(summary)


if __name__ == "__main__":
    main()
