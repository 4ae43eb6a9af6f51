"""What stage 5 needs, resolved once at its entry (`EvaluationRun.resolve`): the evaluation's
settings, the protocol object, where each model's conversations are, the benchmark users and
the run's files. The stage's helpers take this, not the whole parameter file, so that none of
them re-derives the protocol or the variant on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aloe.core import protocols
from aloe.core.config import EvalModelSpec, Params
from aloe.core.config.schema import EvaluationConfig
from aloe.core.layout import RunLayout
from aloe.core.protocols import Protocol, Source
from aloe.stages.evaluation.benchmark import Conversationist, benchmark_personas


@dataclass(frozen=True)
class EvaluationRun:
    """One evaluation of a run: `settings` (the `evaluation` section), its `protocol`, the
    `sources` of each model's conversations, the benchmark `personas` and who each is at a
    turn (`who`), the run's files (`layout`) and its `seed`."""

    settings: EvaluationConfig
    protocol: Protocol
    sources: dict[str, Source]
    personas: list[dict[str, Any]]
    who: Conversationist
    layout: RunLayout
    seed: int

    @classmethod
    def resolve(cls, params: Params,
                personas: list[dict[str, Any]] | None = None) -> "EvaluationRun":
        """The run's evaluation as configured (`personas`: the benchmark, when already read)."""
        personas = benchmark_personas(params) if personas is None else personas
        e = params.evaluation
        return cls(e, protocols.get(e.protocol), protocols.sources(e), personas,
                   Conversationist.of(params, personas), params.layout, params.run.seed)

    @property
    def variant(self) -> str:
        """The configured variant (where metrics.json's figures are kept)."""
        return protocols.variant_name(self.settings)

    @property
    def turns(self) -> int:
        return self.settings.turns

    def source(self, spec: EvalModelSpec | str) -> Source:
        return self.sources[spec if isinstance(spec, str) else spec.name]
