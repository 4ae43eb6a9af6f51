"""Library warnings the workbook cannot fix at their cause, each silenced narrowly, with why.

Executed notebooks must hold no warning a reader has to puzzle over (tests/test_workbook.py
reads every one). Where the workbook itself caused a warning, the cause is fixed instead (the
trainer options use transformers' current names, async clients close on their own loop, tqdm
gets ipywidgets); what is left comes from inside other libraries and says nothing about a run:

- `is_gradient_checkpointing` (transformers' FutureWarning): peft and TRL read the old name of
  `is_activation_checkpointing` when they wrap a model; nothing in the workbook does.
- `gradient_checkpointing_enable` / `_disable` (transformers' FutureWarnings): TRL's DPO
  trainer switches checkpointing off and on around every reference pass by the old names; the
  workbook turns it on by the current one (the trainer's `activation_checkpointing`).
- `torch.jit.script_method` (torch's DeprecationWarning): torch.utils.mkldnn calls it at import.
- "All reward functions returned None" (TRL's GRPO log warning, with the whole reply): a
  reply whose judge answers were all unreadable. TRL then gives it no advantage, which is
  right; the GRPO stage logs each reward's unreadable share per step
  (`rewards/NAME/unreadable`) and sums them up in one line at its end instead.
- "Failed to load CPU gemm_4bit_forward from kernels-community" (bitsandbytes' log warning on
  CPUs with AVX512-BF16): an optional kernel package (`kernels`, fetched from the hub) is
  missing; bitsandbytes falls back to its own CPU kernel. It only concerns CPU training.

Each filter matches one message from one module; any other warning still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

_INSTALLED = False
_RANK = re.compile(r"^\[RANK \d+\] ")


class _DropMessage(logging.Filter):
    """Drops the log records of one logger whose message starts with `prefix` (after the
    `[RANK n] ` that accelerate's logger puts first)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not _RANK.sub("", str(record.msg)).startswith(self.prefix)


def install() -> None:
    """Install the filters (once per process; cheap, imports no library)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    warnings.filterwarnings("ignore", message=r"`(is_gradient_checkpointing|gradient_"
                            r"checkpointing_(enable|disable))` is deprecated",
                            category=FutureWarning, module=r"transformers\.modeling_utils")
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                            category=DeprecationWarning, module=r"torch\.jit\._script")
    logging.getLogger("trl.trainer.grpo_trainer").addFilter(
        _DropMessage("All reward functions returned None"))
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        _DropMessage("Failed to load CPU gemm_4bit_forward from kernels-community"))
