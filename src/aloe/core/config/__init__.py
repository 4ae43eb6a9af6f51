"""The parameter files (papermill YAML): one typed schema, how a file is read, and its API keys.

Every notebook and the CLI validate what they were given through `Params`, so that an unknown
key, a wrong type, an out-of-range number, a key given twice, an empty or unreadable file or a
missing file stops a run before any work with one line that names the file and the key. API
keys are not part of the schema: `check_api_keys` is what commands call before they start.

Where each part lives: `base` (the strict number types and bounds, the base of every section),
`schema` (every section and `Params`; the defaults are the schema's), `training` (the `sft` and
`dpo` sections and TRL's options), `project` (the project root, paths in a file), `loading`
(YAML, `extends:`, `--set`, run folders, notebook parameters), `keys` (API keys). This module
names what the rest of the workbook uses.
"""

from aloe.core.config.base import MAX_TURNS, ROLE_NAMES
from aloe.core.config.keys import EVALUATION_STAGE, check_api_keys, missing_key_message
from aloe.core.config.loading import (
    Override,
    deep_merge,
    load_params,
    load_run_folder,
    notebook_params,
    params_from_dict,
    parse_set,
)
from aloe.core.config.project import ProjectNotFoundError, is_url, project_root, resolve_path
from aloe.core.config.schema import EvalModelSpec, Params, PersonasConfig, RoleConfig
from aloe.core.config.training import DPOConfig, GRPOConfig, GRPORewards, SFTConfig, TrainingConfig

__all__ = [
    "EVALUATION_STAGE", "MAX_TURNS", "ROLE_NAMES", "DPOConfig", "EvalModelSpec", "GRPOConfig",
    "GRPORewards", "Override",
    "Params", "PersonasConfig", "ProjectNotFoundError", "RoleConfig", "SFTConfig",
    "TrainingConfig", "check_api_keys", "deep_merge", "is_url", "load_params", "load_run_folder",
    "missing_key_message", "notebook_params", "params_from_dict", "parse_set", "project_root",
    "resolve_path",
]
