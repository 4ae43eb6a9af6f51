"""The orchestration at paper scale, in short: `bench/paper_scale.py` on a few hundred
conversations. The real stage-2 and stage-5 code, each in its own process, against the stub
server (its own process); the stage-2 process is SIGKILLed half way and run again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_paper_scale_in_short_counts_every_request_and_resumes_without_duplicates() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "paper_scale.py"),
                          "--conversations", "200", "--turns", "2", "--eval-personas", "20",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # every request the stub answered is in the usage ledger, once (5+ per conversation turn)
    assert result["requests"] == result["stub_requests"] > 200 * 2 * 5
    assert result["requests_per_s"] > 0 and result["requests_per_client_cpu_s"] > 0
    # killed half way, then run again: back at work within seconds, nothing written twice
    assert 0 < result["written_at_kill"] < 200
    assert result["conversations_after_resume"] == 200 and result["duplicates"] == 0
    assert result["resume_s"] < 30
    # what the stages add to the process is the records, not a copy per request
    assert result["peak_rss_mb"] - result["base_rss_mb"] < 100
