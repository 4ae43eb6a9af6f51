"""Hand-made run folders for tests of what reads a finished run (the report, the viewer)."""

from __future__ import annotations

from pathlib import Path

from aloe.analysis.metrics import summarise
from aloe.core import manifest
from aloe.core.config import params_from_dict
from aloe.core.records import write_json, write_records
from tests.conftest import tiny_dict


def persona(persona_id: str) -> dict:
    return {"id": persona_id, "profile": f"profile of {persona_id}", "personality": "curious"}


def hand_made_run(tmp_path: Path):
    data = tiny_dict(tmp_path)
    machine_model = str(tmp_path / "models" / "judge-model")
    data["roles"]["judge"].update(model=machine_model, base_url="http://127.0.0.1:8000/v1")
    params = params_from_dict(data, source=str(tmp_path / "params" / "mine.yaml"))
    layout = params.layout
    by_model = {m: [{"model": m, "persona_id": f"p{i}", "turn": k, "score": 1}
                    for i in range(3) for k in (1, 2)] for m in ("base", "sft", "dpo")}
    write_json(layout.metrics, summarise(by_model, n_boot=50, models=["base", "sft", "dpo"]))
    write_records(layout.personas, [persona(f"t{i}") for i in range(7)])
    write_records(layout.benchmark, [persona(f"p{i}") for i in range(3)])
    write_json(layout.timings, {"stages": [{"notebook": "00_preflight", "seconds": 30},
                                           {"notebook": "05_evaluate", "seconds": 95},
                                           {"notebook": "06_report", "seconds": 999}]})
    write_records(layout.usage_history, [{"stage": "evaluate", "started": 1.0, "roles": {},
                                          "totals": {
        "requests": 40, "cache_hits": 2, "prompt_tokens": 1000, "completion_tokens": 234,
        "cost_usd": 0.0123}}])
    manifest.write(params, str(tmp_path / "params" / "mine.yaml"), ["00_preflight"])
    return params, manifest.read(layout)
