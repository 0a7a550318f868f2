"""lingua2_batch: LLMLingua-2 prompt compression at corpus scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Compressor", "CompressionOptions", "CompressionResult"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .compressor import Compressor
    from .core.options import CompressionOptions
    from .core.result import CompressionResult

# Imported on first use (PEP 562): `import lingua2_batch` must not load torch, so that the command line
# (`lingua2-batch --help`, `--version`, `report`) starts in well under a second.
_LAZY = {"Compressor": ".compressor", "CompressionOptions": ".core.options", "CompressionResult": ".core.result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
