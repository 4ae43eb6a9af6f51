"""Where every file of a run lives: the one place that names them.

A run is a folder under `run.output_dir` named after `run.name`. Stages talk to each other only
through its files, so each file is named here once and every stage, notebook, test and the
report ask this object for it (`params.layout.personas`, `params.layout.eval_records("dpo")`)
instead of spelling the name again.

    outputs/                        run.output_dir
      cache/llm.sqlite              the response cache, shared by runs (run.cache_path)
      cache/local_server.json|.log  the shared local server's state and log
      RUN/                          one run (run.name)
        notebooks/NN_*.ipynb        executed notebooks          runner.json  stage times
        profiles.jsonl personalities.jsonl personas.jsonl        stage 1: training pools
        benchmark.jsonl benchmark_profiles.jsonl benchmark_personalities.jsonl
        persona_rounds.jsonl persona_candidates.jsonl persona_summary.json persona_map.json
        conversations.jsonl conversations_summary.json          stage 2
        data/sft data/dpo data/export_summary.json               stage 2 exports
        adapters/STAGE/  training/STAGE/  merged/STAGE/          stages 3-4
        eval/MODEL.jsonl metrics.json                            stage 5
        report.html                                              stage 6
        usage/STAGE.json usage/history.jsonl usage/live/         the usage ledger
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAINING_STAGES = ("sft", "dpo")
# The files of a finished adapter folder that more than one stage reads.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's, newest first
ADAPTER_STATS = "training_stats.json"  # written last by training: time, memory, weights' sha256


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run, from its folder and the shared response cache."""

    run_dir: Path
    cache_path: Path

    # -- shared by runs ----------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.cache_path.parent

    @property
    def local_server_state(self) -> Path:
        return self.cache_dir / "local_server.json"

    @property
    def local_server_log(self) -> Path:
        return self.cache_dir / "local_server.log"

    # -- the runner --------------------------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.run_dir / ".lock"

    @property
    def notebooks(self) -> Path:
        return self.run_dir / "notebooks"

    def executed_notebook(self, name: str) -> Path:
        return self.notebooks / name

    @property
    def timings(self) -> Path:
        return self.run_dir / "runner.json"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    # -- stage 1: personas -------------------------------------------------------------------
    def pool(self, name: str) -> Path:
        """A text pool: profiles, personalities, benchmark_profiles, benchmark_personalities."""
        return self.run_dir / f"{name}.jsonl"

    @property
    def personas(self) -> Path:
        return self.run_dir / "personas.jsonl"

    @property
    def benchmark(self) -> Path:
        return self.run_dir / "benchmark.jsonl"

    @property
    def persona_rounds(self) -> Path:
        return self.run_dir / "persona_rounds.jsonl"

    @property
    def persona_candidates(self) -> Path:
        return self.run_dir / "persona_candidates.jsonl"

    @property
    def persona_summary(self) -> Path:
        return self.run_dir / "persona_summary.json"

    @property
    def persona_map(self) -> Path:
        return self.run_dir / "persona_map.json"

    # -- stage 2: conversations and their exports --------------------------------------------
    @property
    def conversations(self) -> Path:
        return self.run_dir / "conversations.jsonl"

    @property
    def conversations_summary(self) -> Path:
        return self.run_dir / "conversations_summary.json"

    @property
    def data(self) -> Path:
        return self.run_dir / "data"

    def dataset(self, stage: str) -> Path:
        """The export a training stage learns from (a Hugging Face DatasetDict)."""
        return self.data / _training_stage(stage)

    @property
    def export_summary(self) -> Path:
        return self.data / "export_summary.json"

    # -- stages 3-4: training ----------------------------------------------------------------
    def adapter(self, stage: str) -> Path:
        """A finished PEFT adapter, with its tokenizer, log and statistics."""
        return self.run_dir / "adapters" / _training_stage(stage)

    def adapter_file(self, stage: str, name: str) -> Path:
        return self.adapter(stage) / name

    def checkpoints(self, stage: str) -> Path:
        """A training in progress; removed once its adapter is written."""
        return self.run_dir / "training" / _training_stage(stage)

    def merged(self, stage: str) -> Path:
        return self.run_dir / "merged" / _training_stage(stage)

    # -- stage 5: evaluation -----------------------------------------------------------------
    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def eval_records(self, model: str) -> Path:
        return self.eval_dir / f"{model}.jsonl"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    # -- the usage ledger --------------------------------------------------------------------
    @property
    def usage_dir(self) -> Path:
        return self.run_dir / "usage"

    def usage(self, stage: str) -> Path:
        return self.usage_dir / f"{stage}.json"

    @property
    def usage_history(self) -> Path:
        return self.usage_dir / "history.jsonl"

    @property
    def usage_live(self) -> Path:
        return self.usage_dir / "live"


def _training_stage(stage: str) -> str:
    if stage not in TRAINING_STAGES:
        raise ValueError(f"unknown training stage {stage!r}: expected one of "
                         f"{', '.join(TRAINING_STAGES)}")
    return stage
