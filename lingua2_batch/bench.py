"""``lingua2-batch bench``: the reference (llmlingua 0.2.2) and our core over the same corpus and model
in one run. Prints JSON lines: what was measured, on what, our figure and the reference's."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .model.scorer import ScoringStats

SIZE_NAMES = ("bert-base", "large", "medium", "small", "tiny")


def model_size(name: str) -> Any:
    """The scratch model size called ``name`` (torch is imported here, not when the CLI starts)."""
    from .model.scratch import BERT_BASE, TINY, XLM_ROBERTA_LARGE, ModelSize

    return {"tiny": TINY, "small": ModelSize(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64),
            "medium": ModelSize(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
            "bert-base": BERT_BASE, "large": XLM_ROBERTA_LARGE}[name]


class PeakRss:
    """Peak resident memory of this process while the block runs, above what it was before (MiB). On Linux
    the kernel keeps the peak (VmHWM, reset through /proc/self/clear_refs), so timed passes run with nothing
    beside them; elsewhere a thread samples the resident size every 10 ms (a wake-up that costs the pass it
    measures a little of its time; ``sampler_cpu_s`` is that thread's own CPU time)."""

    def __enter__(self) -> "PeakRss":
        self.baseline = self.peak = _rss_mib()
        self.sampler_cpu_s = 0.0
        self._thread = None
        if not _reset_peak_rss():
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mib())
        self.sampler_cpu_s = time.thread_time()

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            self.peak = max(self.peak, _kernel_peak_rss_mib())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, _rss_mib())

    @property
    def growth(self) -> float:
        return round(self.peak - self.baseline, 1)


def _reset_peak_rss() -> bool:
    """Reset this process's kernel-kept peak resident size to its current size (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _kernel_peak_rss_mib() > 0
    except OSError:
        return False


def _kernel_peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class ForwardTimer:
    """Seconds spent inside a torch module's forward (the reference's model time), and how many of
    the token positions it was fed were real rather than padding. On CUDA the device is synchronised
    on entry and exit, so the seconds are the device's (the reference waits for each result anyway)."""

    def __init__(self, module: Any, on_gpu: bool = False):
        self.on_gpu = on_gpu
        self.reset()
        module.register_forward_pre_hook(lambda _module, _args, kwargs: self._start(kwargs), with_kwargs=True)
        module.register_forward_hook(lambda *_: self._stop())

    def reset(self) -> None:
        self.seconds = 0.0
        self.real_tokens = self.fed_tokens = self.real_position_pairs = self.fed_position_pairs = 0
        self._started = 0.0

    def _start(self, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None:
            row_lengths = mask.sum(dim=-1)
            self.real_tokens += int(row_lengths.sum())
            self.fed_tokens += mask.numel()
            self.real_position_pairs += int((row_lengths**2).sum())
            self.fed_position_pairs += mask.shape[0] * mask.shape[-1] ** 2
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()
        self._started = time.perf_counter()

    def _stop(self) -> None:
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._started


@dataclass
class _Passes:
    """Timed passes of one side: wall times, the last result, peak memory growth over all passes."""

    walls: list[float] = field(default_factory=list)
    result: Any = None
    memory_growth: float = 0.0
    gpu_peak_mib: float | None = None

    def run(self, function: Callable[[], Any], on_gpu: bool) -> None:
        import torch

        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        with PeakRss() as memory:
            started = time.perf_counter()
            self.result = function()
            self.walls.append(time.perf_counter() - started)
        self.memory_growth = max(self.memory_growth, memory.growth)
        if on_gpu:
            self.gpu_peak_mib = max(self.gpu_peak_mib or 0.0, torch.cuda.max_memory_allocated() / 2**20)

    @property
    def best(self) -> int:
        """Which pass was fastest (steady state: warm allocator and caches, as in a long job)."""
        return min(range(len(self.walls)), key=self.walls.__getitem__)


def _best_seconds(function: Callable[[], Any], runs: int = 3) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        walls.append(time.perf_counter() - started)
    return min(walls)


def irreducible_seconds(ours: Any, texts: list[str], rate: float, model_seconds: float) -> dict[str, float]:
    """What any implementation that gives this mode's outputs must spend on these texts, timed here:
    the model on every chunk (our forward time, nearly unpadded), the tokenizer passes the mode needs
    with no Python around them (compat: the text, then every chunk string that is not the text itself,
    as the reference does; extractive: one pass with offsets), and the target-LLM token count of every
    text."""
    from .core import compat as llmlingua_compat
    from .core.options import CompressionOptions

    backend = ours.loaded.tokenizer.backend_tokenizer
    if ours.compat == "llmlingua":
        prepared = ours.prepare(texts, CompressionOptions.from_kwargs(rate=rate))
        whole = set(texts)
        retokenized = [c.text for p in prepared for c in llmlingua_compat.chunk_list(p) if c.text not in whole]
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        tokenizer_seconds = _best_seconds(lambda: encode(texts, add_special_tokens=False)) + _best_seconds(
            lambda: encode(retokenized, add_special_tokens=False)
        )
    else:
        tokenizer_seconds = _best_seconds(lambda: backend.encode_batch(texts, add_special_tokens=False))
    count_seconds = _best_seconds(lambda: [ours.counter.count(t) for t in texts])
    return {"tokenizer": tokenizer_seconds, "token_counts": count_seconds, "model": model_seconds}


def replica_finish(ours: Any, texts: list[str], rate: float, runs: int, on_gpu: bool,
                   concurrency: int = 1) -> tuple[float, ScoringStats, list]:
    """What a replica of the Ray job does: ``finish`` on prompts that CPU tasks already prepared, as
    ``concurrency`` units at once, each in its own thread (the job's ``replica_concurrency``). Best wall
    seconds of ``runs``, that pass's scoring stats and its results; on CUDA with every pass's span on the device's
    clock (two threads' passes interleave on the stream, so busy time is the union of the spans)."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    from .core.options import CompressionOptions
    from .model.scorer import ScoringStats

    prepared = ours.prepare(texts, CompressionOptions.from_kwargs(rate=rate))
    share = -(-len(prepared) // concurrency)
    units = [prepared[start : start + share] for start in range(0, len(prepared), share)]
    best: tuple[float, ScoringStats, list] | None = None
    with ThreadPoolExecutor(concurrency) as threads:
        for _ in range(runs):
            ours.scorer.stats = ScoringStats(device_spans=[] if on_gpu else None)
            started = time.perf_counter()
            results = [r for unit in threads.map(ours.finish, units) for r in unit]
            if on_gpu:
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
            if best is None or wall < best[0]:
                best = (wall, ours.scorer.stats, results)
    assert best is not None
    return best


def compare_precisions(model_dir: str, texts: list[str], rate: float, label: str, runs: int = 3,
                       device: str = "cpu", max_batch_tokens: int | None = None) -> list[dict]:
    """Extractive mode in float32, in reduced precision as ``Compressor`` runs it (mixed: float32
    embeddings and LayerNorms, autocast) and with every weight in that precision (what ``bfloat16`` meant
    before): a replica's throughput (``replica_finish``, one unit), GPU idle share and, against float32,
    the share of equal word decisions. What mixed precision costs and what it buys, on one device."""
    import torch

    from . import Compressor

    on_gpu = device.startswith("cuda")
    reduced = "bfloat16" if not on_gpu or torch.cuda.is_bf16_supported() else "float16"
    variants = {}
    for name, dtype in (("float32", "float32"), (f"{reduced} mixed", reduced), (f"{reduced} every weight", reduced)):
        compressor = Compressor(model_dir, compat=None, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens)
        if name.endswith("every weight"):
            compressor.loaded.model.to(compressor.loaded.dtype)
            compressor.scorer.autocast_dtype = None
        compressor.compress_batch(texts[:2], rate=rate)  # warm-up
        seconds, stats, results = replica_finish(compressor, texts, rate, runs, on_gpu)
        variants[name] = (results, seconds, stats)
        del compressor
        if on_gpu:
            torch.cuda.empty_cache()
    baseline = variants["float32"][0]
    lines = []
    for name, (results, seconds, stats) in variants.items():
        share, words = decision_agreement(results, baseline)
        lines.append({"measure": "precision_comparison", "model": label, "records": len(texts), "device": device,
                      "precision": name, "best_of_runs": runs, "replica_finish_seconds": round(seconds, 4),
                      "model_tokens_per_second": round(stats.real_tokens / seconds),
                      "gpu_idle_share_of_wall_time":
                          round(1 - stats.device_busy_seconds() / seconds, 3) if on_gpu else None,
                      "decision_agreement_vs_float32": round(share, 5), "words": words})
    return lines


def _reference_safe(text: str) -> str:
    return text.replace("<|endoftext|>", "<|end|>")  # the reference raises on it


# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) of GPUs a replica is likely to get, for model
# FLOP utilisation; `--peak-tflops` gives any other device's (or another dtype's) peak.
DENSE_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "A100": 312.0,
                          "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def device_peak_tflops(device: str, dtype: Any) -> float | None:
    """This GPU's dense bf16 peak when the run is bf16 and the GPU is in the table; None otherwise."""
    import torch

    if not device.startswith("cuda") or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for model, peak in DENSE_BF16_PEAK_TFLOPS.items() if model in name), None)


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def decision_agreement(results: list, baseline: list) -> tuple[float, int]:
    """Share of words whose keep/drop decision is the same in both runs, and how many words."""
    import numpy as np

    ours = np.concatenate([np.asarray(c.labels) for r in results for c in r.contexts])
    base = np.concatenate([np.asarray(c.labels) for r in baseline for c in r.contexts])
    return float((ours == base).mean()) if ours.size else 1.0, int(ours.size)


def run_benchmark(model_dir: str, texts: list[str], compat: str | None, rate: float, label: str,
                  runs: int = 3, device: str = "cpu", dtype: str | None = None,
                  max_batch_tokens: int | None = None, peak_tflops: float | None = None) -> list[dict]:
    import torch
    from llmlingua import PromptCompressor

    from . import Compressor
    from .core.token_counting import seed_tiktoken_cache
    from .model.scorer import ScoringStats
    from .model.flops import dense_flops_per_token, forward_flops

    # The reference loads cl100k_base through tiktoken's cache: point this process at a cache seeded from the
    # local file, whatever the environment says (an inherited TIKTOKEN_CACHE_DIR may be empty, which turns
    # tiktoken's cache off, or lack the file, and then the reference tries to download it).
    os.environ["TIKTOKEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="lingua2-tiktoken-")
    seed_tiktoken_cache(os.environ["TIKTOKEN_CACHE_DIR"])
    on_gpu = device.startswith("cuda")
    ours = Compressor(model_dir, compat=compat, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens)
    # the reference loads float32 on "cpu" and the checkpoint's own dtype on "cuda"
    reference = PromptCompressor(model_dir, device_map=device, use_llmlingua2=True)
    timer = ForwardTimer(reference.model, on_gpu)
    warmup = texts[:2]
    ours.compress_batch(warmup, rate=rate)
    [reference.compress_prompt_llmlingua2(t, rate=rate) for t in warmup]
    reference_timers: list[dict] = []

    def reference_pass() -> list[dict]:
        timer.reset()
        results = [reference.compress_prompt_llmlingua2(t, rate=rate) for t in texts]
        reference_timers.append(dict(vars(timer)))
        return results

    our_passes: list[ScoringStats] = []

    def our_pass() -> list:
        ours.scorer.stats = ScoringStats(device_spans=[] if on_gpu else None)
        results = ours.compress_batch(texts, rate=rate)
        if on_gpu:
            torch.cuda.synchronize()
        our_passes.append(ours.scorer.stats)
        return results

    reference_side, our_side = _Passes(), _Passes()
    for _ in range(runs):  # alternating, so a change in machine load hits both sides alike
        reference_side.run(reference_pass, on_gpu)
        our_side.run(our_pass, on_gpu)
    ref_results, our_results = reference_side.result, our_side.result
    ref_seconds, our_seconds = reference_side.walls[reference_side.best], our_side.walls[our_side.best]
    ref_memory, our_memory = reference_side.memory_growth, our_side.memory_growth
    ref_gpu_memory, our_gpu_memory = reference_side.gpu_peak_mib, our_side.gpu_peak_mib
    ref_timer, stats = reference_timers[reference_side.best], our_passes[our_side.best]
    tokens = sum(r.origin_tokens for r in our_results)
    identical = sum(a["compressed_prompt"] == b.compressed_prompt for a, b in zip(ref_results, our_results))
    our_dtype = "int8" if ours.loaded.int8_linear else str(ours.loaded.dtype).replace("torch.", "")
    on = {"model": label, "records": len(texts), "origin_tokens": tokens, "mode": compat or "extractive", "rate": rate,
          "best_of_runs": runs, "device": device, "dtype": our_dtype,
          "max_batch_tokens": ours.scorer.max_batch_tokens}
    # on CUDA our passes are asynchronous: the device's own busy time is the model's time
    our_model_seconds = stats.device_busy_seconds() if on_gpu else stats.forward_seconds
    ours_model_share = our_model_seconds / our_seconds
    ref_model_seconds = ref_timer["seconds"]
    floor = irreducible_seconds(ours, texts, rate, our_model_seconds)
    replicas = {concurrency: replica_finish(ours, texts, rate, runs, on_gpu, concurrency)[:2] for concurrency in (1, 2)}
    config = ours.loaded.config
    our_useful = forward_flops(config, stats.real_tokens, stats.real_position_pairs)
    ref_useful = forward_flops(config, ref_timer["real_tokens"], ref_timer["real_position_pairs"])
    peak = peak_tflops or device_peak_tflops(device, ours.loaded.dtype)
    # host work outside the forward passes (on CUDA: outside launching them and waiting for results)
    our_host_seconds = our_seconds - stats.forward_seconds
    ref_host_seconds = ref_seconds - ref_model_seconds
    lines = [
        {"measure": "records_per_second", **on, "ours": round(len(texts) / our_seconds, 2),
         "reference": round(len(texts) / ref_seconds, 2), "speedup": round(ref_seconds / our_seconds, 2)},
        {"measure": "tokens_per_second", **on, "ours": round(tokens / our_seconds), "reference": round(tokens / ref_seconds)},
        {"measure": "model_tokens_per_second", **on, "ours": round(stats.real_tokens / our_seconds),
         "reference": round(ref_timer["real_tokens"] / ref_seconds),
         "ours_fed_including_padding": round(stats.padded_tokens / our_seconds),
         "reference_fed_including_padding": round(ref_timer["fed_tokens"] / ref_seconds)},
        {"measure": "model_flops", **on,
         "gflop_per_token_at_512": _significant(forward_flops(config, 512, 512 * 512) / 512 / 1e9),
         "gflop_per_token_dense": _significant(dense_flops_per_token(config) / 1e9),
         "ours_useful_tflops_per_second": _significant(our_useful / our_seconds / 1e12),
         "reference_useful_tflops_per_second": _significant(ref_useful / ref_seconds / 1e12),
         "ours_executed_tflops_per_second": _significant(
             forward_flops(config, stats.padded_tokens, stats.padded_position_pairs) / our_seconds / 1e12),
         "peak_tflops": peak,
         "ours_model_flop_utilisation": _significant(our_useful / our_seconds / 1e12 / peak) if peak else None,
         "reference_model_flop_utilisation": _significant(ref_useful / ref_seconds / 1e12 / peak) if peak else None},
        {"measure": "host_work_model_tokens_per_second", **on,
         "ours": round(stats.real_tokens / max(our_host_seconds, 1e-9)),
         "reference": round(ref_timer["real_tokens"] / max(ref_host_seconds, 1e-9)),
         "ours_host_seconds": round(our_host_seconds, 4), "reference_host_seconds": round(ref_host_seconds, 4),
         "cores": os.cpu_count()},
        *({"measure": "replica_finish", **on, "concurrency": concurrency, "seconds": round(replica_seconds, 4),
           "model_tokens_per_second": round(replica.real_tokens / replica_seconds),
           "host_seconds_outside_forward": round(replica_seconds - replica.forward_seconds, 4) if concurrency == 1 else None,
           "gpu_idle_share_of_wall_time":
               round(1 - replica.device_busy_seconds() / replica_seconds, 3) if on_gpu else None}
          for concurrency, (replica_seconds, replica) in replicas.items()),
        {"measure": "peak_memory_growth_mib", **on, "ours": our_memory, "reference": ref_memory},
        {"measure": "model_share_of_wall_time", **on, "ours": round(ours_model_share, 3),
         "reference": round(ref_model_seconds / ref_seconds, 3)},
        {"measure": "outside_model_share_of_wall_time", **on, "ours": round(1 - ours_model_share, 3),
         "reference": round(1 - ref_model_seconds / ref_seconds, 3)},
        {"measure": "padding_share_of_model_tokens", **on,
         "ours": round(1 - stats.real_tokens / max(stats.padded_tokens, 1), 3),
         "reference": round(1 - ref_timer["real_tokens"] / max(ref_timer["fed_tokens"], 1), 3),
         "speedup_that_padding_alone_would_give": round(ref_timer["fed_tokens"] / max(ref_timer["real_tokens"], 1), 2)},
        {"measure": "speedup_ceiling", **on, "ours_seconds": round(our_seconds, 4), "reference_seconds": round(ref_seconds, 4),
         "irreducible_seconds": {k: round(v, 4) for k, v in floor.items()},
         "ceiling": round(ref_seconds / sum(floor.values()), 2), "speedup": round(ref_seconds / our_seconds, 2)},
        {"measure": "identical_compressed_prompts", **on, "ours": identical, "of": len(texts)},
        {"measure": "chunks_rescored_canonically", **on, "ours": stats.rescored_chunks, "of_batches": stats.batches},
    ]
    if on_gpu:
        lines += [
            {"measure": "peak_gpu_memory_allocated_mib", **on, "ours": round(our_gpu_memory, 1),
             "reference": round(ref_gpu_memory, 1)},
            {"measure": "gpu_idle_share_of_wall_time", **on, "ours": round(1 - ours_model_share, 3),
             "reference": round(1 - ref_model_seconds / ref_seconds, 3)},
        ]
    if our_dtype != "float32":
        baseline = Compressor(model_dir, compat=compat, device=device, dtype="float32", max_batch_tokens=max_batch_tokens)
        share, words = decision_agreement(our_results, baseline.compress_batch(texts, rate=rate))
        lines.append({"measure": "decision_agreement_vs_float32", **on, "ours": round(share, 5), "words": words})
    return lines


def add_bench_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the core against llmlingua 0.2.2 (needs the test extra)")
    parser.add_argument("--model", help="checkpoint directory (default: build one from scratch, see --size)")
    parser.add_argument("--size", choices=SIZE_NAMES, default="small",
                        help="scratch model size when --model is not given (small: 1 layer x 32; medium: 2 x 128; "
                             "bert-base: 12 x 768; large: XLM-R large's shape, 24 x 1024 with its 250,002-piece "
                             "embedding matrix)")
    parser.add_argument("--family", choices=["sentencepiece", "wordpiece"], default="sentencepiece",
                        help="scratch tokenizer family: XLM-R style sentencepiece or mBERT style wordpiece")
    parser.add_argument("--compat", choices=["llmlingua", "none"], default="llmlingua",
                        help="llmlingua: byte-identical outputs; none: extractive mode")
    parser.add_argument("--rate", type=float, default=0.5, help="compression rate passed to both sides")
    parser.add_argument("--repeat", type=int, default=1, help="pass over the shipped corpus this many times")
    parser.add_argument("--unit", choices=["documents", "paragraphs"], default="documents",
                        help="compress whole documents, or each paragraph as its own record (RAG passages)")
    parser.add_argument("--documents", type=int, default=0, help="use only the first N records (0: all)")
    parser.add_argument("--runs", type=int, default=3, help="passes per side; the best wall time counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    parser.add_argument("--dtype", default=None,
                        help="our precision: default bfloat16 on CUDA in extractive mode, float32 otherwise; "
                             "float32, bfloat16, float16 (GPU), int8 (CPU, extractive: dynamic quantisation)")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="token positions per forward pass (ours; default: 8192 on CPU, 16384 on GPUs)")
    parser.add_argument("--compare-precisions", action="store_true",
                        help="instead of the reference: extractive mode in float32, mixed reduced precision (the "
                             "default on GPUs) and every weight in reduced precision; throughput and agreement")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak for this dtype, for model FLOP utilisation (known bf16 GPUs: built in)")
    parser.set_defaults(handler=_bench_command)


def _bench_command(args: argparse.Namespace) -> int:
    from .model.scratch import build_checkpoint, shipped_corpus_texts

    texts = [_reference_safe(t) for t in shipped_corpus_texts()] * args.repeat
    if args.unit == "paragraphs":
        texts = [p.strip() for t in texts for p in t.split("\n\n") if p.strip()]
    if args.documents:
        texts = texts[: args.documents]
    compat = None if args.compat == "none" else args.compat
    with tempfile.TemporaryDirectory(prefix="lingua2-bench-") as scratch:  # the large one is 2.2 GB
        model_dir, label = args.model, args.model
        if model_dir is None:
            # the reference only runs on paths that name one of its two model families
            name = {"sentencepiece": "xlm-roberta-large", "wordpiece": "bert-base-multilingual-cased"}[args.family]
            model_dir = str(Path(scratch) / f"scratch-{args.size}-{name}")
            build_checkpoint(model_dir, args.family, size=model_size(args.size))
            label = f"scratch-{args.size}-{args.family}"
        if args.compare_precisions:
            lines = compare_precisions(model_dir, texts, args.rate, label, args.runs, args.device, args.max_batch_tokens)
        else:
            lines = run_benchmark(model_dir, texts, compat, args.rate, label, args.runs, args.device, args.dtype,
                                  args.max_batch_tokens, args.peak_tflops)
        for line in lines:
            print(json.dumps({**line, "unit": args.unit}), flush=True)
    return 0
