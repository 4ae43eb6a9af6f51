"""Full fine-tuning on several processes: a training stage with `method: full` and
`processes: N` > 1 launches itself through accelerate with FSDP, then reads what it wrote.

The stage (`aloe.stages.training.train_stage`, in the process that holds the run folder) writes its
validated parameters to `RUN/training/STAGE/launch_params.yaml` and runs

    accelerate launch --config_file configs/accelerate_fsdp_full.yaml --num_processes N \\
        -m aloe.stages.rank STAGE RUN/training/STAGE/launch_params.yaml

in the project root; each of the N processes runs `aloe.stages.rank`, which trains the stage as one
rank (accelerate's environment says so, so it does not launch again). On a machine without
GPUs, accelerate (1.15) runs no FSDP: the same command trains the N processes as multi-CPU data
parallelism over gloo, which is what the CPU test exercises.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from aloe.core.config import Params, TrainingConfig, project_root
from aloe.core.errors import AloeError

log = logging.getLogger("aloe.stages.training")

FSDP_CONFIG = Path("configs") / "accelerate_fsdp_full.yaml"
LAUNCH_PARAMS = "launch_params.yaml"


def in_distributed_launch() -> bool:
    """Whether this process is one rank of a launch of several (torchrun/accelerate set it)."""
    return int(os.environ.get("WORLD_SIZE") or 1) > 1


def needs_launch(cfg: TrainingConfig) -> bool:
    """A stage that trains in full on several processes, called outside a launch."""
    return cfg.method == "full" and cfg.processes > 1 and not in_distributed_launch()


# Without GPUs: rank 0 cannot broadcast the weights (FSDP's sync_module_states initialises the
# other ranks' parameters on a GPU), so every rank reads the checkpoint itself.
CPU_OPTIONS = ("--fsdp_cpu_ram_efficient_loading", "false", "--fsdp_sync_module_states", "false")


def launch_command(stage: str, params_file: Path, processes: int, root: Path,
                   gpus: bool = True) -> list[str]:
    """The accelerate launch of `processes` ranks of `main` for one stage (`gpus`: False on a
    machine without them, where every rank loads the model itself)."""
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(root / FSDP_CONFIG), "--num_processes", str(processes),
            *(() if gpus else CPU_OPTIONS), "-m", "aloe.stages.rank", stage, str(params_file)]


def write_launch_params(params: Params, stage: str) -> Path:
    """The run's parameters as validated, with absolute output paths, for the ranks to load."""
    data = params.model_dump(mode="json")
    data["run"]["output_dir"] = str(params.layout.run_dir.parent)
    data["run"]["cache_path"] = str(params.layout.cache_path)
    target = params.layout.checkpoints(stage) / LAUNCH_PARAMS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def launch_stage(params: Params, stage: str) -> None:
    """Train `stage` in `processes` ranks under accelerate; raise AloeError (exit 1) when the
    launch fails: the processes' own output, above it, says why."""
    import torch

    cfg: TrainingConfig = getattr(params, stage)
    root, gpus = project_root(), torch.cuda.is_available()
    command = launch_command(stage, write_launch_params(params, stage), cfg.processes, root,
                             gpus)
    if not gpus:
        log.warning("%s: no GPU: accelerate runs no FSDP on CPU; the %d processes train as "
                    "multi-CPU data parallelism (gloo)", stage, cfg.processes)
    log.info("%s: launching %d processes: %s", stage, cfg.processes, shlex.join(command))
    env = {**os.environ, "ALOE_ROOT": str(root), "ALOE_PARAMS_SOURCE": params.source}
    returncode = subprocess.run(command, cwd=root, env=env, check=False).returncode
    if returncode != 0:
        raise AloeError(f"{stage}: accelerate launch of {cfg.processes} processes exited "
                          f"with {returncode} (their output is above); the command: "
                          f"{shlex.join(command)}")
