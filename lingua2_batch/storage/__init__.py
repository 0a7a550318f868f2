"""Storage: where corpora, outputs and checkpoints live (local folders, ``s3://``, any fsspec URI).

Everything that touches a filesystem goes through here so that the pipeline never deals with
credentials or endpoints: ``s3://`` is served by s3fs, which takes endpoint, region and credentials
from the standard AWS environment (``AWS_ENDPOINT_URL[_S3]``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config``,
instance roles), never from arguments of ours.
"""

from .fs import (
    Location,
    OutputPathError,
    commit_file,
    confined_join,
    list_input_files,
    read_json,
    resolve,
    write_json,
)
from .models import localize_model

__all__ = [
    "Location", "OutputPathError", "commit_file", "confined_join", "list_input_files",
    "read_json", "resolve", "write_json", "localize_model",
]
