"""Show which RIM units are active in a trained run; see agents/cli/visualize.py.

python scripts/visualize.py runs/<run>                               # all test conditions -> <run>/visualize
python scripts/visualize.py runs/<run> --conditions iid doorkey_8x8 --episodes 20 --out figures/rim
python scripts/visualize.py runs/<run> --fps 8 --max-steps 200      # faster GIFs, episodes cut at 200 steps
python scripts/visualize.py --stats-only multirun/<sweep> --episodes 20  # statistics only, mean over seeds per model

Writes <condition>.gif, <condition>_heatmap.png, activation_stats.{json,csv,md} and
activation_frequency.png, and prints the statistics table. --stats-only renders nothing: it
writes each RIM run's statistics to <run>/visualize/activation_stats.{json,csv,md} (read back
on the next call) and their mean over seeds per model and condition to
activation_summary.{json,md} in --out (default: the first path).
"""

from agents.cli.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
