"""Loading a token-classification checkpoint safely: safetensors weights, no remote code, no global
seeding, explicit device and dtype.

Reduced precision (bfloat16, float16) is mixed precision: the matrix products run in it, while the
embeddings and every LayerNorm keep float32 weights, so that under ``torch.autocast`` (see the scorer)
the residual stream and normalisation stay float32. On the 36 shipped documents, word decisions agree
with float32's 99.83% (XLM-R large's shape, on CPU) against 99.35% with every weight in bfloat16 (README)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# float32 weights whose Linear layers are quantised to int8 on load, activations quantised per batch
# on the fly (torch's dynamic quantisation): CPU only, approximate.
INT8 = "int8"
MIXED_PRECISION = (torch.bfloat16, torch.float16)
# Modules whose weights stay float32 in mixed precision: what the residual stream is made and normalised with.
FLOAT32_MODULES = (torch.nn.Embedding, torch.nn.LayerNorm)
# The reference seeds torch with 42 right before it grows the embedding matrix for [NEWi] rows.
REFERENCE_RESIZE_SEED = 42


class UnsafeCheckpointError(ValueError):
    """The checkpoint only has pickle weights and the caller did not allow them."""


@dataclass
class LoadedClassifier:
    model: Any
    tokenizer: Any
    config: Any
    device: torch.device
    dtype: torch.dtype
    identity: str  # model id or path plus commit hash when known, for manifests
    int8_linear: bool = False  # Linear layers dynamically quantised to int8 (``dtype="int8"``)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The precision forward passes run under ``torch.autocast`` in (None: the weights' own)."""
        return self.dtype if self.dtype in MIXED_PRECISION else None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or str(dtype).lower() == INT8:  # int8 quantises float32 weights after loading
        return torch.float32
    resolved = dtype if isinstance(dtype, torch.dtype) else DTYPES.get(str(dtype).lower())
    if resolved is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if resolved == torch.float16 and device.type == "cpu":
        raise ValueError("float16 is for GPUs; use float32 (default) or bfloat16 on CPU")
    return resolved


def load_classifier(
    model_name_or_path: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
) -> LoadedClassifier:
    """Load tokenizer, config and a ``*ForTokenClassification`` model in eval mode on ``device``."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    int8_linear = str(dtype).lower() == INT8
    if int8_linear and torch_device.type not in ("cpu", "meta"):
        raise ValueError("dtype='int8' (dynamic quantisation) runs on CPU only; use bfloat16 or float16 on GPUs")
    common = dict(trust_remote_code=trust_remote_code, revision=revision)
    config = AutoConfig.from_pretrained(model_name_or_path, **common)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **common)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_name_or_path}: a fast (Rust) tokenizer is required for character offsets")
    if torch_device.type == "meta":
        # the tokenizer side of a prepare task: the architecture without its weights (none are read, and
        # transformers prints no "Loading weights" progress)
        with torch.device("meta"):
            model = AutoModelForTokenClassification.from_config(config, dtype=torch_dtype,
                                                                trust_remote_code=trust_remote_code)
    else:
        # mixed precision loads float32 and narrows what runs in reduced precision afterwards, so that the
        # float32 modules keep the checkpoint's own values
        load_dtype = torch.float32 if torch_dtype in MIXED_PRECISION else torch_dtype
        model = _from_pretrained(AutoModelForTokenClassification, model_name_or_path, config, load_dtype,
                                 allow_pickle, common)
        if torch_dtype in MIXED_PRECISION:
            narrow_to_mixed_precision(model, torch_dtype)
    if config.num_labels != 2:
        raise ValueError(f"{model_name_or_path}: expected a 2-label (drop/keep) classifier, got {config.num_labels} labels")
    model.to(torch_device).eval()
    if int8_linear and torch_device.type == "cpu":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    commit = getattr(config, "_commit_hash", None)
    identity = f"{model_name_or_path}@{commit}" if commit else str(model_name_or_path)
    return LoadedClassifier(model, tokenizer, config, torch_device, torch_dtype, identity, int8_linear)


def narrow_to_mixed_precision(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Every floating-point weight in ``dtype`` except those of ``FLOAT32_MODULES``."""
    for module in model.modules():
        if isinstance(module, FLOAT32_MODULES):
            continue
        for parameter in module.parameters(recurse=False):
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)


def _from_pretrained(auto_class: Any, model_name_or_path: str, config: Any, torch_dtype: torch.dtype,
                     allow_pickle: bool, common: dict[str, Any]) -> Any:
    try:
        return auto_class.from_pretrained(
            model_name_or_path, config=config, dtype=torch_dtype, use_safetensors=True, **common
        )
    except OSError as error:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{model_name_or_path}: no safetensors weights found ({error}). Pickle checkpoints can run "
                "arbitrary code when loaded; pass allow_pickle=True (--allow-pickle) only for a source you trust."
            ) from error
        return auto_class.from_pretrained(
            model_name_or_path, config=config, dtype=torch_dtype, use_safetensors=False, **common
        )


def add_force_token_placeholders(loaded: LoadedClassifier, placeholders: list[str]) -> None:
    """What llmlingua 0.2.2 does on construction: add ``[NEWi]`` as special tokens and grow the
    embedding matrix if the checkpoint lacks their rows. New rows are drawn exactly as the reference
    draws them (seed 42), inside a forked RNG so the caller's global random state is untouched."""
    loaded.tokenizer.add_special_tokens({"additional_special_tokens": placeholders})
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    if rows < len(loaded.tokenizer):
        devices = [loaded.device] if loaded.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(REFERENCE_RESIZE_SEED)
            loaded.model.resize_token_embeddings(len(loaded.tokenizer))
