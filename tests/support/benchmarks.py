"""Stub-backed evaluation runs for tests: the tiny profile with every role on the stub server, and
a benchmark drawn from the official files."""

from __future__ import annotations

from pathlib import Path

from aloe.core.config import params_from_dict
from aloe.core.records import write_records
from aloe.stages.pools import load_aloe_benchmark
from tests.conftest import tiny_dict
from tests.support.stub_server import StubServer


def stub_dict(tmp_path: Path, stub: StubServer, second_judge: bool = False,
              **evaluation_keys) -> dict:
    """The tiny profile with every role and two models under test ("a", "b") on the stub."""
    keys = {"turns": 3, "bootstrap_samples": 100,
            "models": [{"name": "a", "model": "stub-a", "base_url": stub.base_url},
                       {"name": "b", "model": "stub-b", "base_url": stub.base_url}],
            **evaluation_keys}
    data = tiny_dict(tmp_path, evaluation=keys)
    for role in data["roles"].values():
        role.update(model="stub", base_url=stub.base_url)
    if second_judge:
        data["roles"]["second_judge"] = {"model": "stub-other-family",
                                         "base_url": stub.base_url, "temperature": 0.0}
    return data


def with_benchmark(data: dict, reference_dir: Path, n: int = 4):
    params = params_from_dict(data)
    personas = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                   reference_dir / "personality_eval.jsonl")[::7][:n]
    write_records(params.layout.benchmark, personas)
    return params, personas
