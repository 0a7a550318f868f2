"""Ray job entrypoint: compress a Parquet corpus.

    ray job submit --address http://<head>:8265 --working-dir . \
        -- python jobs/compress_corpus.py --config jobs/nightly.yaml [--input ... --output ... --model ...]

Same options as ``lingua2-batch compress`` (``--help`` lists them); command-line options override the
config file. Exits non-zero when the job fails or any input row is unaccounted for.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run from a checkout or a Ray job working_dir without installing the package
    sys.path.insert(0, _REPO)

from lingua2_batch.cli import compress_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compress_main(sys.argv[1:], prog=os.path.basename(__file__)))
