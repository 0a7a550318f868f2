"""``python -m lingua2_batch ...`` is ``lingua2-batch ...``."""

import sys

from .cli import main

sys.exit(main())
