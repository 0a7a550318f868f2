"""lingua2_batch: LLMLingua-2 prompt compression at corpus scale."""

from .compressor import Compressor
from .core.options import CompressionOptions
from .core.result import CompressionResult

__all__ = ["Compressor", "CompressionOptions", "CompressionResult"]
__version__ = "0.1.0"
