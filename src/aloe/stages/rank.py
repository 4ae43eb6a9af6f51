"""One rank of a training stage launched on several processes (`aloe.stages.launch`):

    accelerate launch --config_file configs/accelerate_fsdp_full.yaml --num_processes N \\
        -m aloe.stages.rank STAGE RUN/training/STAGE/launch_params.yaml

Each process loads the parameters the stage wrote and trains the stage as one rank
(accelerate's environment says so, so it does not launch again).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aloe.core.config import load_params
from aloe.stages import training


def main(argv: Sequence[str] | None = None) -> int:
    """One rank of a launched stage: load the parameters the stage wrote, train, exit."""
    parser = argparse.ArgumentParser(prog="python -m aloe.stages.rank",
                                     description="one rank of a full fine-tuning stage")
    parser.add_argument("stage", choices=("sft", "dpo"))
    parser.add_argument("params", help="the launch_params.yaml the stage wrote")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = os.environ.get("ALOE_PARAMS_SOURCE") or args.params
    params = load_params(args.params, source=source)
    training.train_stage(params, args.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
