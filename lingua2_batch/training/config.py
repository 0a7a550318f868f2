"""Configuration files for the training jobs: YAML mappings, with ``key.sub=value`` overrides from
the command line (values parsed as YAML, so ``epochs=3`` is an int and ``rates=[0.3,0.5]`` a list)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import yaml


def load_config(path: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if path:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return config


def job_arguments(description: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value (repeatable), e.g. --set train.epochs=3")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def init_ray(config: dict[str, Any]) -> None:
    """Join the cluster a job was submitted to (``RAY_ADDRESS``), else start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(**config.get("ray_init", {}))


def print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, default=str), flush=True)
