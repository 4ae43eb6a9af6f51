"""Stage 1: the persona pool (profiles x personalities), grown by iterative self-generation
and filtered by novelty, and the held-out benchmark.

One module per job: `novelty` (embeddings and the novelty filter), `parse` (reading the
generator's replies), `grow` (one pool, round by round), `leakage` (no training persona is a
near-copy of a benchmark user), `stage` (the stage: pools, pairing, benchmark, summary),
`views` (reading a finished stage back: tables and the pool map). Text
pools and the official ALOE files are read by `aloe.stages.pools`.
"""

from aloe.stages.personas.grow import STOP_REASONS, PoolGrower, PoolSpec, PoolSummary, stop_reason
from aloe.stages.personas.novelty import (
                                   DEFAULT_EMBEDDING_MODEL,
                                   EmbeddingModelError,
                                   NoveltyFilter,
                                   load_embedding_model,
)
from aloe.stages.personas.parse import ParsedReply, parse_reply
from aloe.stages.personas.stage import (
                                   PersonasSummary,
                                   initial_items,
                                   pair_personas,
                                   planned_requests,
                                   run_stage,
                                   threshold_for,
)
from aloe.stages.personas.views import (
                                   candidates_table,
                                   leakage_report,
                                   leakage_table,
                                   pca_2d,
                                   persona_leakage_table,
                                   pool_kind,
                                   pool_map,
                                   read_pool,
                                   rounds_table,
)
from aloe.stages.pools import KINDS

__all__ = ["DEFAULT_EMBEDDING_MODEL", "KINDS", "STOP_REASONS", "EmbeddingModelError",
           "NoveltyFilter", "ParsedReply", "PersonasSummary", "PoolGrower", "PoolSpec",
           "PoolSummary", "candidates_table", "initial_items", "leakage_report",
           "leakage_table", "load_embedding_model", "pair_personas", "parse_reply", "pca_2d",
           "persona_leakage_table", "planned_requests",
           "pool_kind", "pool_map", "read_pool", "rounds_table", "run_stage",
           "stop_reason", "threshold_for"]
