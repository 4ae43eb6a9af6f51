"""The transcript viewer at paper scale: how big `viewer.html` gets, how long it takes to write,
to open in headless Chromium, and to apply a filter.

    .venv/bin/python bench/viewer_scale.py [--conversations 3000] [--turns 10] [--words 160]

A run folder in a temporary directory gets records in the real formats (the test's
`tests/test_viewer.py` writers): 100 benchmark personas x 3 models x K turns of stage 5, and N
conversation trees of K turns of stage 2, every reply `--words` words long (the paper's size by
default: 3,000 conversations of 10 turns). Then `aloe.presentation.viewer.write_viewer` is timed,
and the page is opened in Chromium (`tests/support/browser.py`): the time to DOMContentLoaded, the
rows drawn, and the milliseconds one menu change takes over all the tree turns.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aloe.core.layout import run_layout  # noqa: E402
from aloe.core.records import write_records  # noqa: E402
from aloe.presentation import viewer  # noqa: E402
from tests.support.browser import chromium_path, inspect_page  # noqa: E402
from tests.test_viewer import BENCHMARK, MODELS, eval_record, tree  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--words", type=int, default=160)
    args = parser.parse_args()
    words = " ".join(["lorem", "ipsum", "dolor", "sit", "amet", "elit", "sed", "do"]
                     * (args.words // 8 + 1)).split()[: args.words]
    reply = " ".join(words)
    with tempfile.TemporaryDirectory() as folder:
        layout = run_layout(Path(folder) / "paper")
        personas = [{**BENCHMARK[0], "id": f"bench-{i:03d}"} for i in range(100)]
        write_records(layout.benchmark, personas)
        for model in MODELS:
            write_records(layout.eval_records(model), [
                eval_record(model, p, k, 1 + (i + k) % 5, reply=reply)
                for i, p in enumerate(personas) for k in range(1, args.turns + 1)])
        trees = []
        for i in range(args.conversations):
            record = tree(i, {"id": f"t{i}", "profile": reply[:300], "personality": "Curious."},
                          ["hinted", "plain"] * (args.turns // 2) + ["hinted"] * (args.turns % 2))
            for turn in record["turns"]:
                turn["hinted"] = turn["plain"] = reply
            trees.append(record)
        write_records(layout.conversations, trees)
        started = time.perf_counter()
        page = viewer.write_viewer(layout)
        result = {"write_s": round(time.perf_counter() - started, 2),
                  "page_mb": round(page.stat().st_size / 1e6, 1),
                  "tree_turns": args.conversations * args.turns,
                  "benchmark_turns": len(personas) * len(MODELS) * args.turns}
        if chromium_path() is not None:
            shown = inspect_page(page, settle=max(5.0, result["page_mb"] / 10), evaluate=[
                "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd",
                "(() => { const t = performance.now(); const s = "
                "document.getElementById('trees-turn'); s.value = '3';"
                " s.dispatchEvent(new Event('change')); return performance.now() - t; })()",
                "document.querySelectorAll('tr.row').length"])
            loaded, filtered, drawn = shown.evaluated
            result.update(open_s=round(loaded / 1000, 2), filter_ms=round(filtered, 1),
                          rows_drawn=drawn, console_errors=len(shown.console_errors))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
