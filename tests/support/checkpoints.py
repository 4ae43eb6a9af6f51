"""Waiting for a training stage run as a child process to write a checkpoint (the kill-and-
resume tests of SFT and GRPO)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, timeout: float,
                        step: int) -> Path:
    """`folder/checkpoint-STEP` once its trainer state is complete; fails naming why when the
    child ended first or nothing came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = folder / f"checkpoint-{step}" / "trainer_state.json"
        try:
            json.loads(state.read_text())
            return state.parent
        except (OSError, ValueError):
            pass
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"training ended (rc {process.returncode}) before its first "
                                 f"checkpoint:\n{output[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint in {folder} after {timeout:.0f} s")
