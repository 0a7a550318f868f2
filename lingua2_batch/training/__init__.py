"""The training wing: teacher → label → filter → train → evaluate, producing checkpoints that
``Compressor`` and the batch job load unchanged (LLMLingua-2's data distillation, arXiv 2403.12968).

- ``teacher``: OpenAI-compatible chat-completions client and Ray Data job (MeetingBank-LLMCompressed rows)
- ``labeling``: word split, sliding-window alignment, variation rate / alignment gap, percentile filter
- ``stages``: Ray Data jobs for labelling and filtering; Parquet and ``datasets`` output
- ``train``: ``train_loop`` (plain PyTorch) run alone or under Ray Train's ``TorchTrainer``
- ``evaluate``: token metrics and achieved compression ratios of a checkpoint

Nothing here is imported by the compression core; this package imports the core, not the reverse.
"""
