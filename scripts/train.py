"""Train one agent from the Hydra config tree in configs/ (a thin wrapper of agents.experiment.train).

Usage::

    python scripts/train.py                                  # RIM-PPO on doorkey, 300k frames
    python scripts/train.py model=lstm env=empty seed=3 total_frames=100000
    python scripts/train.py model.num_units=6 model.k=4 model.hidden_size=192
    python scripts/train.py -m model=lstm,rim seed=0,1,2     # a sweep (one run folder each)

An invalid config exits with status 2 and a one-line reason, and leaves no run folder.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from agents.experiment import ConfigError, train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except ConfigError as error:
        print(f"error: invalid config: {error}", file=sys.stderr)
        if all(p.name in (".hydra", "train.log") for p in run_dir.iterdir()):
            shutil.rmtree(run_dir)
        sys.exit(2)
    print(f"run folder: {run_dir}")
    return float(metrics["iid"])


if __name__ == "__main__":
    main()
