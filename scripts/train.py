"""Train one agent (or a sweep) from the Hydra config tree in configs/; see agents/cli/train.py.

python scripts/train.py                                  # RIM-PPO on doorkey, 300k frames
python scripts/train.py model=lstm env=empty seed=3 total_frames=100000
python scripts/train.py -m sweep=rim_vs_lstm env=empty   # 2 models x 5 seeds
python scripts/train.py resume=<run folder>              # continue a stopped run
"""

from agents.cli.train import main

if __name__ == "__main__":
    main()
