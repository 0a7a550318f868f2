"""Ray Data jobs for the labelling and filtering stages (the teacher job lives in ``teacher``).

label:  MeetingBank-LLMCompressed Parquet → one labelled row per chunk (words, spans, labels, metrics)
filter: labelled Parquet → the rows that pass the percentile filter, as Parquet (``<output>/parquet``) and
        as a ``datasets.Dataset`` saved with ``save_to_disk`` (``<output>/dataset``); with
        ``save_dataset=False`` only the Parquet, directly into ``<output>``
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from ..storage.fs import resolve
from .labeling import (
    DEFAULT_AG_PERCENTILE,
    DEFAULT_VR_PERCENTILE,
    DEFAULT_WINDOW_SIZE,
    AlignmentConfig,
    filter_thresholds,
    keep_mask,
    label_pairs_rows,
)

if TYPE_CHECKING:
    import datasets

LABELLED_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("chunk_index", pa.int32()),
        ("text", pa.string()),
        ("compressed", pa.string()),
        ("words", pa.list_(pa.string())),
        ("word_starts", pa.list_(pa.int32())),
        ("word_ends", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int8())),
        ("compression_rate", pa.float64()),
        ("variation_rate", pa.float64()),
        ("hitting_rate", pa.float64()),
        ("matching_rate", pa.float64()),
        ("alignment_gap", pa.float64()),
    ]
)


class LabelUDF:
    def __init__(self, window_size: int, search_backward: bool, limit_jump: bool, id_column: str | None):
        self.config = AlignmentConfig(window_size, search_backward, limit_jump)
        self.id_column = id_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        if not self.id_column:
            for row in rows:  # a stable id for the row: a hash of its text
                row["_row"] = hashlib.sha256((row.get("prompt") or "").encode()).hexdigest()[:16]
        labelled = label_pairs_rows(rows, self.config, self.id_column)
        return pa.Table.from_pylist(labelled, schema=LABELLED_SCHEMA)


def run_label_job(
    input_path: str | Sequence[str],
    output_path: str,
    *,
    window_size: int = DEFAULT_WINDOW_SIZE,
    search_backward: bool = True,
    limit_jump: bool = True,
    id_column: str | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    import ray

    columns = ["prompt", "prompt_list", "compressed_prompt_list"] + ([id_column] if id_column else [])
    ds = ray.data.read_parquet(input_path).select_columns(columns)  # projection pushed into the reader
    labelled = ds.map_batches(
        LabelUDF,
        fn_constructor_args=(window_size, search_backward, limit_jump, id_column),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(ray.available_resources().get("CPU", 1)))),
    )
    labelled.write_parquet(output_path, mode=ray.data.SaveMode.OVERWRITE)
    return {"output": output_path}


def run_filter_job(
    input_path: str | Sequence[str],
    output_path: str,
    *,
    vr_percentile: float = DEFAULT_VR_PERCENTILE,
    ag_percentile: float = DEFAULT_AG_PERCENTILE,
    save_dataset: bool = True,
) -> dict[str, Any]:
    """Two passes: the (small) metric columns to compute thresholds, then the filter itself."""
    import ray

    ds = ray.data.read_parquet(input_path)
    metrics = ray.data.read_parquet(input_path).select_columns(["variation_rate", "alignment_gap"]).to_arrow_refs()
    table = pa.concat_tables(ray.get(metrics)) if metrics else pa.table({"variation_rate": [], "alignment_gap": []})
    thresholds = filter_thresholds(
        table["variation_rate"].to_numpy(), table["alignment_gap"].to_numpy(), vr_percentile, ag_percentile
    )

    def keep(batch: pa.Table) -> pa.Table:
        mask = keep_mask(batch["variation_rate"].to_numpy(), batch["alignment_gap"].to_numpy(), thresholds)
        return batch.filter(pa.array(mask))

    # URI-safe joins: pathlib would turn "s3://bucket/x" into "s3:/bucket/x"
    output = resolve(output_path)
    parquet = output.child("parquet") if save_dataset else output
    ds.map_batches(keep, batch_format="pyarrow").write_parquet(parquet.uri, mode=ray.data.SaveMode.OVERWRITE)
    summary = {
        "vr_percentile": vr_percentile,
        "ag_percentile": ag_percentile,
        "variation_rate_threshold": thresholds.variation_rate,
        "alignment_gap_threshold": thresholds.alignment_gap,
        "n_input": thresholds.n_input,
        "n_after_variation_filter": thresholds.n_after_variation,
        "n_kept": thresholds.n_kept,
    }
    if save_dataset:
        save_as_hf_dataset(parquet.uri, output.child("dataset").uri)
        with output.fs.open(output.join("filter_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary


def save_as_hf_dataset(parquet_dir: str, dataset_dir: str) -> "datasets.Dataset":
    """The filtered Parquet as a ``datasets.Dataset`` saved with ``save_to_disk`` (local or object store;
    ``datasets.load_from_disk`` reads it back)."""
    import datasets
    import pyarrow.parquet as pq

    source = resolve(parquet_dir)
    files = sorted(p for p in source.fs.find(source.path) if p.endswith(".parquet"))
    tables = []
    for path in files:
        with source.fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle))
    dataset = datasets.Dataset(pa.concat_tables(tables) if tables else LABELLED_SCHEMA.empty_table())
    dataset.save_to_disk(dataset_dir)
    return dataset


def read_labelled(path: str | Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
    """Labelled rows from Parquet files/directories or a ``save_to_disk`` dataset directory, local or
    on an object store (``s3://...``)."""
    import pyarrow.parquet as pq

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    tables = []
    for p in paths:
        location = resolve(str(p))
        fs = location.fs
        if fs.exists(location.join("dataset_info.json")) or fs.exists(location.join("state.json")):
            import datasets

            tables.append(datasets.load_from_disk(location.uri).data.table)
            if columns:
                tables[-1] = tables[-1].select(list(columns))
            continue
        if fs.isdir(location.path):
            files = sorted(f for f in fs.find(location.path) if f.endswith(".parquet"))
        else:
            files = [location.path]
        for f in files:
            with fs.open(f, "rb") as handle:
                tables.append(pq.read_table(handle, columns=list(columns) if columns else None))
    if not tables:
        raise FileNotFoundError(f"no labelled data under {paths}")
    return pa.concat_tables(tables, promote_options="permissive")
