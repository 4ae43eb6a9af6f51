"""The run's manifest: written by the runner before the first stage, with the code's commit,
every parameter as resolved, versions, seeds, models and hardware; earlier invocations with
other parameters are kept; paths a reader sees are never machine paths. And the runner leaves
07_compare to `aloe compare`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aloe.core import manifest
from aloe.core.config import deep_merge, params_from_dict
from aloe.operations import runner
from tests.conftest import ROOT, tiny_dict


def remote_params(tmp_path: Path, **changes: dict):
    """The tiny profile with every role behind a URL (so no local server is started), with
    `changes` merged in key by key."""
    data = deep_merge(tiny_dict(tmp_path), changes)
    for role in data["roles"].values():
        role.update(base_url="http://127.0.0.1:9/v1", model="some/model")
    return params_from_dict(data, source="params/p.yaml")


def run_without_stages(params, monkeypatch: pytest.MonkeyPatch, stages: str = "1") -> dict:
    """`run_workbook` as `aloe run` calls it, with the notebooks' execution left out."""
    ran: list[str] = []
    monkeypatch.setattr(runner, "execute_stage",
                        lambda notebook, *args, **kwargs: ran.append(notebook.stem) or 0.0)
    runner.run_workbook(params, "params/p.yaml", stages=stages, progress=False)
    assert ran == ["01_personas"] if stages == "1" else ran
    return manifest.read(params.layout)


def test_the_runner_writes_the_manifest_before_the_first_stage(tmp_path, monkeypatch) -> None:
    params = remote_params(tmp_path)
    params.run.name = "overridden"  # as --run-name does
    found = run_without_stages(params, monkeypatch)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert found["git"]["commit"] == head and isinstance(found["git"]["dirty"], bool)
    assert found["params"] == params.model_dump(mode="json")  # every value, as resolved
    assert found["params"]["run"]["name"] == "overridden"
    assert found["params"]["dpo"]["trainer"]["beta"] == 0.1  # a default the file never set
    assert found["params_file"] == "params/p.yaml" and found["stages"] == ["01_personas"]
    assert found["seeds"]["run.seed"] == params.run.seed
    assert found["packages"]["torch"] and found["packages"]["python"]
    assert found["hardware"]["cpu_cores"] >= 1 and "gpus" in found["hardware"]
    assert found["models"]["roles"]["judge"]["model"] == "some/model"
    assert found["models"]["policy"]["base_model"].endswith("SmolLM2-135M-Instruct")
    assert found["workbook_version"] == found["packages"]["aloe"]
    assert found["earlier"] == []


def test_a_rerun_with_other_parameters_keeps_the_earlier_one(tmp_path, monkeypatch) -> None:
    run_without_stages(remote_params(tmp_path), monkeypatch)
    again = run_without_stages(remote_params(tmp_path), monkeypatch)
    assert again["earlier"] == []  # same code, same parameters: nothing to keep
    changed = remote_params(tmp_path, dpo={"trainer": {"beta": 0.5}})
    found = run_without_stages(changed, monkeypatch)
    assert found["params"]["dpo"]["trainer"]["beta"] == 0.5
    assert [e["changed"] for e in found["earlier"]] == [["dpo.trainer.beta"]]
    assert found["earlier"][0]["stages"] == ["01_personas"]


def test_paths_a_reader_sees(tmp_path) -> None:
    root = tmp_path / "project"
    assert manifest.display_path(str(root / "outputs" / "tiny"), root) == "outputs/tiny"
    assert manifest.display_path("/elsewhere/models/Llama-3", root) == "…/Llama-3"
    assert manifest.display_path("outputs/tiny", root) == "outputs/tiny"
    tree = {"a": [str(root / "x"), "http://host:8000/v1", "gpt-4o", 3], "b": {"c": "/srv/m"}}
    assert manifest.portable(tree, root) == {"a": ["x", "http://host:8000/v1", "gpt-4o", 3],
                                             "b": {"c": "…/m"}}
    assert manifest.flatten({"dpo": {"trainer": {"beta": 0.1}, "lora_r": 8}, "x": []}) == \
        {"dpo.trainer.beta": 0.1, "dpo.lora_r": 8, "x": []}


def test_compare_is_no_stage_of_aloe_run() -> None:
    names = [nb.stem for nb in runner.notebooks()]
    assert names[-1] == "06_report" and runner.COMPARE_NOTEBOOK not in names
    with pytest.raises(runner.StageSelectionError, match="07_compare compares finished runs"):
        runner.parse_stages("6-7", runner.notebooks())
