"""Corpora kept as Hugging Face datasets saved with ``Dataset.save_to_disk``: a folder with
``state.json`` and Arrow IPC stream shards (``data-00000-of-00004.arrow``). Each shard becomes one
Parquet input file, so the job keeps its per-file commits, manifest and resume behaviour. (Datasets
that are Parquet files already, as on the hub, need no conversion: point the job at them.)"""

from __future__ import annotations

import json
import posixpath
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .fs import Location, commit_file

STATE_FILE = "state.json"
DATASET_DICT_FILE = "dataset_dict.json"


class SavedDatasetError(ValueError):
    """The folder is not a single saved dataset the job can read."""


def is_saved_dataset(location: Location) -> bool:
    return location.fs.isfile(location.join(STATE_FILE)) or location.fs.isfile(location.join(DATASET_DICT_FILE))


def saved_dataset_shards(location: Location) -> list[str]:
    """The Arrow shards of a saved ``Dataset``, in order."""
    if location.fs.isfile(location.join(DATASET_DICT_FILE)):
        with location.fs.open(location.join(DATASET_DICT_FILE), "rb") as handle:
            splits = json.load(handle).get("splits", [])
        raise SavedDatasetError(
            f"{location.uri} is a DatasetDict with splits {splits}; point the input at one split's folder, "
            f"e.g. {location.uri.rstrip('/')}/{splits[0] if splits else 'train'}"
        )
    with location.fs.open(location.join(STATE_FILE), "rb") as handle:
        state = json.load(handle)
    shards = [entry["filename"] for entry in state.get("_data_files", [])]
    if not shards:
        raise SavedDatasetError(f"{location.uri}: {STATE_FILE} lists no data files")
    return shards


def convert_saved_dataset(source: Location, target: Location, write: bool = True) -> Location:
    """Write each shard of the saved dataset as ``<target>/<shard>.parquet`` (skipping shards already
    converted), streaming record batches so a shard never has to fit in memory. Returns ``target``.
    ``write=False`` only checks: SavedDatasetError unless every shard is converted already."""
    for shard in saved_dataset_shards(source):
        final = target.join(posixpath.splitext(shard)[0] + ".parquet")
        if target.fs.exists(final):
            continue
        if not write:
            raise SavedDatasetError(f"{source.uri}: shard {shard} is not converted to Parquet yet (a run converts "
                                    f"the saved dataset under {target.uri} first)")
        staged = f"{final}.tmp-{uuid.uuid4().hex}"
        target.fs.makedirs(target.path, exist_ok=True)
        with source.fs.open(source.join(shard), "rb") as raw:
            reader = pa.ipc.open_stream(raw)
            with target.fs.open(staged, "wb") as out:
                with pq.ParquetWriter(out, reader.schema) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
        commit_file(target.fs, staged, final)
    return target
