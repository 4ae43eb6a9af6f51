"""Where every file of a run lives: the one place that names them.

A run is a folder under `run.output_dir` named after `run.name`. Stages talk to each other only
through its files, so each file is named here once and every stage, notebook, test and the
report ask this object for it (`params.layout.personas`, `params.layout.eval_records("dpo")`)
instead of spelling the name again.

    outputs/                        run.output_dir
      cache/llm.sqlite              the response cache, shared by runs (run.cache_path)
      cache/local_server.json|.log  the shared local server's state and log
      compare/NAME.html|.ipynb      a comparison page across runs (`aloe compare`)
      RUN/                          one run (run.name)
        manifest.json               what the run was made with (written when a run starts)
        notebooks/NN_*.ipynb        executed notebooks
        runner.json                 the parameter file, the command line's --set, stage times
        progress.json               the running stage's progress, shown live by `aloe run`
        profiles.jsonl personalities.jsonl personas.jsonl        stage 1: training pools
        benchmark.jsonl benchmark_profiles.jsonl benchmark_personalities.jsonl
        persona_rounds.jsonl persona_candidates.jsonl persona_summary.json persona_map.json
        persona_leakage.jsonl
        conversations.jsonl conversations_summary.json          stage 2
        data/sft data/dpo data/export_summary.json               stage 2 exports
        adapters/STAGE/ (README.md: the model card)  training/STAGE/  merged/STAGE/  stages 3-4
                                                   (STAGE: sft, dpo, grpo; grpo beside dpo)
        tensorboard/STAGE/                                       their live training curves
        eval/MODEL.jsonl metrics.json                            stage 5 (protocol aloe, live)
        eval/VARIANT/MODEL.jsonl                                 another protocol, replayed
                                                                 users or a preference shift
        eval/[VARIANT/]probes/ simulator/ judge_check.jsonl metrics.json
        ratings/VARIANT-form.html -key.json -human.jsonl         the human-rating kit
        report.html viewer.html                                  stage 6: the report, and
                                                                 every transcript (viewer)
        usage/STAGE.json usage/history.jsonl usage/live/         the usage ledger
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The stages trained on stage 2's exports: what the plan, the hardware forecast and preflight
# iterate (their figures and datasets exist for these). ADAPTER_STAGES adds GRPO (aloe.stages.grpo),
# which learns from the simulated users instead of an export: every stage with an adapter
# folder, a model card and an evaluation model named after it ({name: grpo, adapter: grpo}).
TRAINING_STAGES = ("sft", "dpo")
ADAPTER_STAGES = (*TRAINING_STAGES, "grpo")
# The notebooks the runner treats apart, by name: the preflight (skipped when nothing else
# runs), the report (not part of the run's wall time), the comparison (`aloe compare` only).
PREFLIGHT_NOTEBOOK = "00_preflight"
REPORT_NOTEBOOK = "06_report"
COMPARE_NOTEBOOK = "07_compare"
# Notebooks that run only when a parameter turns them on (the key, dotted); off, `aloe run`
# passes them by without a kernel.
STAGE_SWITCHES = {"04_grpo": "grpo.enabled"}
DEFAULT_VARIANT = "aloe"  # stage 5 under the ALOE protocol, live users, no preference shift
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
        """runner.json: the parameter file, the command line's overrides, stage times."""
        return self.run_dir / "runner.json"

    @property
    def progress(self) -> Path:
        """The running stage's latest progress (aloe.core.progress), which `aloe run` shows live."""
        return self.run_dir / "progress.json"

    @property
    def manifest(self) -> Path:
        """What the run was made with: commit, resolved parameters, versions, hardware."""
        return self.run_dir / "manifest.json"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def viewer(self) -> Path:
        """Every benchmark conversation and training tree on one page
        (`aloe.presentation.viewer`)."""
        return self.run_dir / "viewer.html"

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

    @property
    def persona_leakage(self) -> Path:
        """Per benchmark persona: its nearest training persona and their similarity."""
        return self.run_dir / "persona_leakage.jsonl"

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

    def model_card(self, stage: str) -> Path:
        """The adapter's model card (the Hugging Face README.md of the adapter folder)."""
        return self.adapter_file(stage, "README.md")

    def checkpoints(self, stage: str) -> Path:
        """A training in progress; removed once its adapter is written."""
        return self.run_dir / "training" / _training_stage(stage)

    def merged(self, stage: str) -> Path:
        return self.run_dir / "merged" / _training_stage(stage)

    def tensorboard(self, stage: str) -> Path:
        """A training stage's curves for TensorBoard (`tensorboard --logdir RUN/tensorboard`)."""
        return self.run_dir / "tensorboard" / _training_stage(stage)

    # -- stage 5: evaluation -----------------------------------------------------------------
    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def variant_dir(self, variant: str = DEFAULT_VARIANT) -> Path:
        """The records of one evaluation variant (protocol, user mode, preference shift; see
        `aloe.core.protocols.variant_name`): the default's in eval/ itself, every other's in
        eval/VARIANT/, so that no two kinds of conversation are ever read as one."""
        return self.eval_dir if variant == DEFAULT_VARIANT else self.eval_dir / variant

    def eval_records(self, model: str, variant: str = DEFAULT_VARIANT) -> Path:
        return self.variant_dir(variant) / f"{model}.jsonl"

    def probe_records(self, model: str, variant: str = DEFAULT_VARIANT) -> Path:
        """The inference probes: what the model said it learned about the user, and its score."""
        return self.variant_dir(variant) / "probes" / f"{model}.jsonl"

    def simulator_records(self, model: str, variant: str = DEFAULT_VARIANT) -> Path:
        """The simulated user measured on one model's conversations."""
        return self.variant_dir(variant) / "simulator" / f"{model}.jsonl"

    def judge_check(self, variant: str = DEFAULT_VARIANT) -> Path:
        """The second judge's judgements of a sample of the variant's replies."""
        return self.variant_dir(variant) / "judge_check.jsonl"

    def variant_metrics(self, variant: str = DEFAULT_VARIANT) -> Path:
        """Every figure of one variant (metrics.json is the configured variant's)."""
        return self.variant_dir(variant) / "metrics.json"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    # -- the human-rating kit ----------------------------------------------------------------
    @property
    def ratings_dir(self) -> Path:
        return self.run_dir / "ratings"

    def rating_form(self, variant: str = DEFAULT_VARIANT) -> Path:
        """The blinded sample as a self-contained HTML form."""
        return self.ratings_dir / f"{variant}-form.html"

    def rating_key(self, variant: str = DEFAULT_VARIANT) -> Path:
        """Which model, persona and turn each blinded item is, and the judge's score."""
        return self.ratings_dir / f"{variant}-key.json"

    def human_ratings(self, variant: str = DEFAULT_VARIANT) -> Path:
        """The ratings people gave, as imported from the form's downloads."""
        return self.ratings_dir / f"{variant}-human.jsonl"

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


def run_layout(run_dir: Path) -> RunLayout:
    """The layout of a finished run folder read on its own (the default shared cache)."""
    return RunLayout(run_dir=run_dir, cache_path=run_dir.parent / "cache" / "llm.sqlite")


def comparison_dir(output_dir: Path) -> Path:
    """Where `aloe compare` writes its pages: beside the runs, in `compare/`."""
    return output_dir / "compare"


def comparison_page(output_dir: Path, name: str) -> Path:
    return comparison_dir(output_dir) / f"{name}.html"


def comparison_notebook(output_dir: Path, name: str) -> Path:
    """The executed 07_compare notebook behind a comparison page."""
    return comparison_dir(output_dir) / f"{name}.ipynb"


def _training_stage(stage: str) -> str:
    if stage not in ADAPTER_STAGES:
        raise ValueError(f"unknown training stage {stage!r}: expected one of "
                         f"{', '.join(ADAPTER_STAGES)}")
    return stage
