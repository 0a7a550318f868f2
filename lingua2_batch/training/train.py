"""Training: fine-tune any encoder for 2-label (drop/keep) token classification on labelled words.

Examples. Each labelled chunk is tokenized as the compressor tokenizes it at inference (the text
itself, with character offsets, ``split_special_tokens=True``), so training and inference see the
same pieces. A piece takes the label of the word its first character belongs to (word spans come from
the labelling stage); with ``label_pieces="first"`` only a word's first piece carries the label and
the rest are -100, with ``"all"`` every piece does (the compressor averages piece probabilities per
word, so "all" matches inference). Special tokens and padding are -100: ignored by the loss and the
metrics. Chunks longer than the model window are split into windows at word starts.

``train_loop(config)`` is one plain PyTorch loop (AdamW, linear schedule with warmup, gradient
clipping). Called directly it trains in this process; passed to Ray Train's ``TorchTrainer`` (see
``run_training``) the same function runs data-parallel: ``prepare_model``/``prepare_data_loader``
wrap the model in DDP and shard batches, validation counts are summed over workers, and
``ray.train.report`` carries metrics and, when validation F1 improves, the checkpoint.

Checkpoints are ``save_pretrained`` directories (safetensors + fast tokenizer) with at least
``len(tokenizer) + 100`` embedding rows, the published LLMLingua-2 layout: ``Compressor`` and the
batch job load them as they are.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..model.scratch import FORCE_TOKEN_PLACEHOLDER_ROWS
from .stages import read_labelled

IGNORE_INDEX = -100
PLACEHOLDER_INIT_SEED = 42  # rows are drawn as llmlingua draws them when it grows the matrix


@dataclass
class TrainConfig:
    base_model: str = ""  # any encoder checkpoint directory or hub id (with a fast tokenizer)
    train_data: str | list[str] = ""  # labelled Parquet (file/dir) or a datasets save_to_disk dir
    output_dir: str = ""
    validation_data: str | list[str] | None = None  # default: a held-out share of train_data
    validation_fraction: float = 0.1
    label_pieces: str = "all"  # "first" or "all"
    max_length: int = 512
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    best_metric: str = "f1"  # "f1" (keep class) or "accuracy"
    placeholder_rows: int = FORCE_TOKEN_PLACEHOLDER_ROWS
    num_threads: int | None = None  # torch intra-op threads on CPU
    device: str | None = None  # single process only; Ray Train picks the worker's device
    trust_remote_code: bool = False
    log_every: int = 50  # a progress line every this many optimizer steps (0: only the per-epoch lines)

    def __post_init__(self) -> None:
        # YAML reads "1e-3" as a string (1.1 wants "1.0e-3"); accept numbers written either way
        numbers = {name: float for name in ("validation_fraction", "learning_rate", "weight_decay", "warmup_ratio",
                                            "max_grad_norm")}
        numbers.update({name: int for name in ("max_length", "epochs", "batch_size", "seed", "placeholder_rows", "log_every")})
        for name, kind in numbers.items():
            try:
                setattr(self, name, kind(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                                 f"got {getattr(self, name)!r}") from None
        if "://" in str(self.output_dir):  # checkpoints are written, and Compressor loads them, as local folders
            raise ValueError(f"output_dir must be a local (or mounted) directory, got {self.output_dir!r}")
        if self.label_pieces not in ("first", "all"):
            raise ValueError(f"label_pieces must be 'first' or 'all', got {self.label_pieces!r}")
        if self.best_metric not in ("f1", "accuracy"):
            raise ValueError(f"best_metric must be 'f1' or 'accuracy', got {self.best_metric!r}")


# -- examples ------------------------------------------------------------------------------------


def _frame(tokenizer) -> tuple[list[int], list[int]]:
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(probe) + 1):
        if framed[start : start + len(probe)] == probe:
            return framed[:start], framed[start + len(probe) :]
    raise ValueError("cannot locate the text inside the tokenizer's special-token template")


def piece_labels(
    text: str,
    word_starts: Sequence[int],
    word_ends: Sequence[int],
    word_labels: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    mode: str = "all",
) -> tuple[np.ndarray, np.ndarray]:
    """(label per piece, word index per piece, -1 for none) from word spans and piece offsets."""
    starts = np.asarray(word_starts, dtype=np.int64)
    ends = np.asarray(word_ends, dtype=np.int64)
    labels = np.full(len(offsets), IGNORE_INDEX, dtype=np.int64)
    word_of = np.full(len(offsets), -1, dtype=np.int64)
    last_word = -1
    for k, (s, e) in enumerate(offsets):
        while s < e and text[s].isspace():  # "▁word" offsets may include the space
            s += 1
        if s >= e or len(starts) == 0:
            continue
        w = int(np.searchsorted(starts, s, side="right")) - 1
        if w < 0 or s >= ends[w]:
            continue
        word_of[k] = w
        if mode == "all" or w != last_word:
            labels[k] = int(word_labels[w])
        last_word = w
    return labels, word_of


def build_examples(tokenizer, table, max_length: int, mode: str) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) windows for every labelled row; windows are cut at word starts."""
    prefix, suffix = _frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for text")
    special = {i for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id}
    unk = tokenizer.unk_token_id
    texts = table.column("text").to_pylist()
    encodings = tokenizer(
        texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True, verbose=False
    ).encodings if texts else []
    starts_col = table.column("word_starts").to_pylist()
    ends_col = table.column("word_ends").to_pylist()
    labels_col = table.column("labels").to_pylist()
    examples = []
    for text, enc, ws, we, wl in zip(texts, encodings, starts_col, ends_col, labels_col):
        ids = [unk if (i in special and unk is not None) else i for i in enc.ids]
        labels, word_of = piece_labels(text, ws, we, wl, enc.offsets, mode)
        n, start = len(ids), 0
        while start < n:
            end = min(n, start + budget)
            if end < n:  # back off to the start of the word that straddles the cut
                cut = end
                while cut > start + 1 and word_of[cut] != -1 and word_of[cut] == word_of[cut - 1]:
                    cut -= 1
                end = cut if cut > start + 1 else end
            window_labels = labels[start:end].tolist()
            if mode == "first" and start > 0 and word_of[start] != -1 and word_of[start] == word_of[start - 1]:
                window_labels[0] = IGNORE_INDEX
            if any(l != IGNORE_INDEX for l in window_labels):
                examples.append(
                    (
                        list(prefix) + ids[start:end] + list(suffix),
                        [IGNORE_INDEX] * len(prefix) + window_labels + [IGNORE_INDEX] * len(suffix),
                    )
                )
            start = end
    return examples


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            attention[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# -- model ---------------------------------------------------------------------------------------


def load_base_model(config: TrainConfig):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.base_model, trust_remote_code=config.trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{config.base_model}: a fast tokenizer is required (character offsets)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AutoModelForTokenClassification.from_pretrained(
            config.base_model,
            num_labels=2,
            id2label={0: "drop", 1: "keep"},
            label2id={"drop": 0, "keep": 1},
            ignore_mismatched_sizes=True,  # a base with another head (or none) gets a fresh 2-label head
            trust_remote_code=config.trust_remote_code,
        )
    ensure_placeholder_rows(model, tokenizer, config.placeholder_rows)
    return model, tokenizer


def ensure_placeholder_rows(model, tokenizer, placeholder_rows: int = FORCE_TOKEN_PLACEHOLDER_ROWS) -> None:
    """Grow the embedding matrix to ``len(tokenizer) + placeholder_rows`` rows if it is smaller."""
    wanted = len(tokenizer) + placeholder_rows
    if model.get_input_embeddings().weight.shape[0] < wanted:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PLACEHOLDER_INIT_SEED)
            model.resize_token_embeddings(wanted)


def _limit_model_max_length(directory: Path, max_length: int) -> None:
    """Record the training window as the tokenizer's ``model_max_length`` when it is smaller, so the
    compressor cuts chunks no longer than the positions the model was trained on."""
    path = directory / "tokenizer_config.json"
    if not path.exists():
        return
    spec = json.loads(path.read_text(encoding="utf-8"))
    current = spec.get("model_max_length")
    if not isinstance(current, (int, float)) or current > max_length:
        spec["model_max_length"] = max_length
        path.write_text(json.dumps(spec, indent=2, ensure_ascii=False), encoding="utf-8")


def save_checkpoint(
    model, tokenizer, directory: str | Path, extra: dict[str, Any] | None = None, max_length: int | None = None
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unwrapped = model.module if hasattr(model, "module") else model
    unwrapped.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if max_length is not None:
        _limit_model_max_length(directory, max_length)
    if extra is not None:
        (directory / "training_metrics.json").write_text(json.dumps(extra, indent=2))
    return directory


# -- metrics -------------------------------------------------------------------------------------


def count_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[correct, total, true keep, predicted keep, labelled keep] over non-ignored positions."""
    mask = labels != IGNORE_INDEX
    predicted = logits.argmax(-1)[mask]
    gold = labels[mask]
    return torch.tensor(
        [
            (predicted == gold).sum().item(),
            gold.numel(),
            ((predicted == 1) & (gold == 1)).sum().item(),
            (predicted == 1).sum().item(),
            (gold == 1).sum().item(),
        ],
        dtype=torch.float64,
    )


def metrics_from_counts(counts: Sequence[float]) -> dict[str, float]:
    correct, total, tp, pred_pos, gold_pos = (float(c) for c in counts)
    precision = tp / pred_pos if pred_pos else 0.0
    recall = tp / gold_pos if gold_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": correct / total if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tokens": int(total),
    }


@torch.no_grad()
def evaluate_model(model, loader, device) -> torch.Tensor:
    model.eval()
    counts = torch.zeros(5, dtype=torch.float64)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        counts += count_predictions(logits.float().cpu(), batch["labels"].cpu())
    return counts


# -- the loop ------------------------------------------------------------------------------------


def _split(table, config: TrainConfig):
    if config.validation_data:
        return table, read_labelled(config.validation_data, ["text", "word_starts", "word_ends", "labels"])
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(table.num_rows)
    n_val = max(1, int(round(table.num_rows * config.validation_fraction))) if table.num_rows > 1 else 0
    return table.take(np.sort(order[n_val:])), table.take(np.sort(order[:n_val]))


def train_loop(config: dict[str, Any] | TrainConfig) -> dict[str, Any]:
    """Train, validate each epoch, keep the best checkpoint. Runs alone or as a Ray Train worker
    (``config["_ray_train"] = True``, set by ``run_training``)."""
    raw = asdict(config) if isinstance(config, TrainConfig) else dict(config)
    under_ray = bool(raw.pop("_ray_train", False))
    cfg = TrainConfig(**raw)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    model, tokenizer = load_base_model(cfg)
    columns = ["text", "word_starts", "word_ends", "labels"]
    train_table, val_table = _split(read_labelled(cfg.train_data, columns), cfg)
    train_examples = build_examples(tokenizer, train_table, cfg.max_length, cfg.label_pieces)
    val_examples = build_examples(tokenizer, val_table, cfg.max_length, cfg.label_pieces)
    if not train_examples:
        raise ValueError("no training examples: the labelled data is empty")
    collate = Collator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train_examples, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    val_loader = DataLoader(val_examples, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate)

    rank, world = 0, 1
    if under_ray:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        model = ray.train.torch.prepare_model(model)
        train_loader = ray.train.torch.prepare_data_loader(train_loader)
        val_loader = ray.train.torch.prepare_data_loader(val_loader)
        device = ray.train.torch.get_device()
    else:
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.to(device)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    steps = cfg.epochs * len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), max(1, steps))

    history: list[dict[str, Any]] = []
    best_value, best_epoch = -math.inf, -1
    started = time.time()
    for epoch in range(cfg.epochs):
        if under_ray and hasattr(train_loader, "sampler") and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        model.train()
        loss_sum, n_batches = 0.0, 0
        for batch in train_loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss  # cross-entropy with ignore_index=-100
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            n_batches += 1
            if cfg.log_every and n_batches % cfg.log_every == 0 and rank == 0:
                # one JSON line, as the epoch records: a long epoch is otherwise silent until it ends
                print(json.dumps({"epoch": epoch + 1, "step": n_batches, "steps_in_epoch": len(train_loader),
                                  "train_loss_running": loss_sum / n_batches, "learning_rate": scheduler.get_last_lr()[0],
                                  "elapsed_s": round(time.time() - started, 2)}), flush=True)
        counts = evaluate_model(model, val_loader, device)
        if under_ray and world > 1:
            import torch.distributed as dist

            reduced = counts.to(device)
            dist.all_reduce(reduced)
            counts = reduced.cpu()
        val = metrics_from_counts(counts.tolist())
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, n_batches),
            **{f"val_{k}": v for k, v in val.items()},
            "elapsed_s": round(time.time() - started, 2),
        }
        history.append(record)
        value = val[cfg.best_metric]
        improved = value > best_value
        if improved:
            best_value, best_epoch = value, epoch + 1
        summary = {"best_epoch": best_epoch, f"best_val_{cfg.best_metric}": best_value, "history": history, "config": raw}
        if under_ray:
            import ray.train

            if improved and rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(model, tokenizer, tmp, summary, cfg.max_length)
                    ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(record)
        else:
            print(json.dumps(record), flush=True)
            if improved:
                save_checkpoint(model, tokenizer, cfg.output_dir, summary, cfg.max_length)
    if not under_ray:
        _write_summary(cfg.output_dir, best_epoch, cfg.best_metric, best_value, history, raw)
    return {"best_epoch": best_epoch, f"best_val_{cfg.best_metric}": best_value, "history": history}


def _write_summary(output_dir, best_epoch, metric, value, history, raw) -> None:
    path = Path(output_dir) / "training_metrics.json"
    path.write_text(json.dumps({"best_epoch": best_epoch, f"best_val_{metric}": value, "history": history, "config": raw}, indent=2))


def run_training(
    config: TrainConfig | dict[str, Any],
    *,
    num_workers: int | None = None,
    use_gpu: bool = False,
    resources_per_worker: dict[str, float] | None = None,
    storage_path: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """``num_workers=None``: train in this process. Otherwise Ray Train's ``TorchTrainer`` runs
    ``train_loop`` on ``num_workers`` workers and the best checkpoint is copied to ``output_dir``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    if not num_workers:
        return train_loop(cfg)

    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {**asdict(cfg), "_ray_train": True}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker),
        run_config=RunConfig(
            name=name or f"lingua2-train-{int(time.time())}",
            storage_path=storage_path or str(Path(cfg.output_dir).resolve().parent / "ray_train_runs"),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # only improvements are reported
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    output = Path(cfg.output_dir)
    if output.exists():
        shutil.rmtree(output)
    result.checkpoint.to_directory(str(output))
    summary = json.loads((output / "training_metrics.json").read_text())
    return {k: summary[k] for k in summary if k != "config"}
