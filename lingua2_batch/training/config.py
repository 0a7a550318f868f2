"""Configuration files for the training jobs: YAML mappings, with ``key.sub=value`` overrides from
the command line (values parsed as YAML, so ``epochs=3`` is an int and ``rates=[0.3,0.5]`` a list).

Every job declares the keys it reads (``Keys``). An unknown key (a typo such as ``window_sise`` or
``evaluate.rate``) or a missing required one is a one-line error and exit code 2 before any work, as
``lingua2-batch compress`` reports an invalid configuration: a typo must not silently fall back to a
default.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from ..exit_codes import EXIT_INVALID
from ..pipeline.config import JobConfigError


@dataclass(frozen=True)
class Keys:
    """The keys a configuration mapping may hold. A key in ``sections`` is a nested mapping checked in
    turn; listed in ``required`` it must be there (with its own required keys), else it may be absent."""

    required: Sequence[str] = ()
    optional: Sequence[str] = ()
    sections: Mapping[str, "Keys"] = field(default_factory=dict)

    @classmethod
    def of(cls, dataclass_type: type, required: Sequence[str] = ()) -> "Keys":
        """A section holding the fields of a config dataclass (``TrainConfig``, ``TeacherConfig``)."""
        names = [f.name for f in dataclasses.fields(dataclass_type)]
        return cls(required=tuple(required), optional=tuple(n for n in names if n not in required))

    @property
    def known(self) -> list[str]:
        return sorted({*self.required, *self.optional})

    def problems(self, config: Mapping[str, Any], prefix: str = "") -> tuple[list[str], list[str]]:
        """(unknown keys, missing required keys), as dotted paths."""
        unknown = [f"{prefix}{key}" for key in config if key not in self.known]
        missing = [f"{prefix}{key}" for key in self.required if key not in self.sections and config.get(key) is None]
        for name, section in self.sections.items():
            value = config.get(name)
            if value is None and name not in self.required:
                continue
            if value is not None and not isinstance(value, Mapping):
                raise JobConfigError(f"'{prefix}{name}' must be a mapping, got {value!r}")
            inner_unknown, inner_missing = section.problems(value or {}, f"{prefix}{name}.")
            unknown += inner_unknown
            missing += inner_missing
        return unknown, missing

    def check(self, config: Mapping[str, Any], config_file: str | None = None) -> None:
        """Raise ``JobConfigError`` naming every unknown key (with the known keys) or missing required key."""
        unknown, missing = self.problems(config)
        if unknown:
            by_section: dict[str, list[str]] = {}
            for dotted in unknown:
                by_section.setdefault(dotted.rpartition(".")[0], []).append(dotted)
            raise JobConfigError("; ".join(
                f"unknown config key{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} "
                f"(known{f' in {section!r}' if section else ''}: {', '.join(self._section(section).known)})"
                for section, names in by_section.items()
            ))
        if missing:
            where = (f"in {config_file} or with --set KEY=VALUE" if config_file
                     else "no --config given; use --config FILE or --set KEY=VALUE")
            listed = ", ".join(repr(k) for k in missing)
            raise JobConfigError(f"missing required config key{'s' if len(missing) > 1 else ''} {listed} ({where})")

    def _section(self, dotted: str) -> "Keys":
        keys = self
        for part in dotted.split(".") if dotted else ():
            keys = keys.sections[part]
        return keys


def load_config(path: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if path:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(config, dict):
            raise JobConfigError(f"{path}: a job config must be a YAML mapping")
    for item in overrides:
        if "=" not in item:
            raise JobConfigError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:  # absent, or a section the YAML leaves empty (`evaluate:`)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise JobConfigError(f"cannot set {key!r}: {'.'.join(parts[: depth + 1])!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(value)
    return config


def job_arguments(description: str, keys: Keys, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The job's configuration: ``--config`` YAML, ``--set`` overrides on top, checked against ``keys``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value (repeatable), e.g. --set train.epochs=3")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    keys.check(config, args.config)
    return config


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Turn a configuration error raised inside into one line on stderr and exit code 2 (as
    ``lingua2-batch compress`` does). Wrap everything a job does before it starts Ray or any work."""
    try:
        yield
    except (ValueError, OSError, yaml.YAMLError) as error:  # JobConfigError is a ValueError
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"{os.path.basename(sys.argv[0])}: invalid configuration: {text}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INVALID) from None


def number(config: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    """``config[key]`` (or ``default``) as ``kind`` (int or float); ``None`` stays ``None``."""
    value = config.get(key, default)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise JobConfigError(f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def init_ray(config: dict[str, Any]) -> None:
    """Join the cluster a job was submitted to (``RAY_ADDRESS``), else start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(**(config.get("ray_init") or {}))


def print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, default=str), flush=True)
