"""Adapters that travel: the base model named without a machine path, and a model card filled
from the manifest, the data export, the training statistics and the metrics."""

from __future__ import annotations

import json
from pathlib import Path

from aloe.analysis.metrics import summarise
from aloe.core import manifest
from aloe.core.config import params_from_dict
from aloe.core.local_model import EMBEDDED_HUB_ID
from aloe.stages import model_card
from tests.conftest import tiny_dict


def test_the_base_model_is_named_portably(tmp_path: Path) -> None:
    root = tmp_path / "project"
    inside = root / "models" / "my-llama"
    outside = tmp_path / "elsewhere" / "their-llama"
    for folder in (inside, outside):
        folder.mkdir(parents=True)
    (outside / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3-8B"}))
    assert model_card.portable_base("meta-llama/Llama-3-8B", root) == "meta-llama/Llama-3-8B"
    assert model_card.portable_base(str(inside), root) == "models/my-llama"
    assert model_card.portable_base(str(outside), root) == "meta-llama/Llama-3-8B"
    (outside / "config.json").write_text("{}")
    assert model_card.portable_base(str(outside), root) == "their-llama"
    embedded = "/tmp/x/outputs/models/SmolLM2-135M-Instruct"  # converted from the hub's model
    assert model_card.portable_base(embedded, root) == EMBEDDED_HUB_ID


def test_adapter_config_loses_its_machine_path(tmp_path: Path) -> None:
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"base_model_name_or_path":
                                  "/tmp/run/outputs/models/SmolLM2-135M-Instruct", "r": 8}))
    model_card.make_portable(config)
    assert json.loads(config.read_text()) == {"base_model_name_or_path": EMBEDDED_HUB_ID, "r": 8}


def card_inputs(tmp_path: Path) -> tuple[dict, dict, dict]:
    params = params_from_dict(tiny_dict(tmp_path), source="params/tiny.yaml")
    found = manifest.portable(manifest.build(params, "params/tiny.yaml", ["03_sft"]))
    export = {"conversations": 4, "turns": 8, "examples": 8,
              "left_out": {"inconsistent": 0, "unparseable": 0},
              "train": {"examples": 6, "personas": 3}, "validation": {"examples": 2,
                                                                      "personas": 1}}
    stats = {"base_model": str(tmp_path / "outputs/models/SmolLM2-135M-Instruct"), "steps": 4,
             "train_examples": 6, "train_wall_s": 9.5, "device": "cpu",
             "final_loss": 1.23456789}
    return found, export, stats


def test_the_card_says_data_hyperparameters_and_metrics(tmp_path: Path) -> None:
    found, export, stats = card_inputs(tmp_path)
    by_model = {m: [{"model": m, "persona_id": f"p{i}", "turn": k, "score": 1}
                    for i in range(2) for k in (1, 2)] for m in ("base", "sft", "dpo")}
    metrics = summarise(by_model, n_boot=50, models=["base", "sft", "dpo"])
    card = model_card.render_card("sft", found, export, stats, metrics)
    assert card.startswith(f"---\nbase_model: {EMBEDDED_HUB_ID}\n")
    assert "- train: 6 examples from 3 personas" in card and "1 persona (no" in card
    assert "- lora_r: 8" in card and "- learning_rate: " in card  # hyperparameters as resolved
    assert "- final loss (nats/token): 1.235" in card
    assert "- mean AL (1-5): 1.000 [1.000, 1.000]" in card and "sft - base" in card
    assert "every one of the 12 scored replies a 1" in card  # the caveats travel too
    assert f"commit {manifest.commit_label(found)}" in card
    assert str(tmp_path) not in card and "/tmp/" not in card


def test_a_card_before_evaluation_says_so(tmp_path: Path) -> None:
    found, export, stats = card_inputs(tmp_path)
    card = model_card.render_card("dpo", found, export, stats, None)
    assert "Not evaluated yet" in card and "- beta: 0.1" in card
