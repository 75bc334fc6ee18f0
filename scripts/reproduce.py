"""Reproduce one table of the RIM vs LSTM results; see agents/cli/reproduce.py.

python scripts/reproduce.py tune                  # learning rate per core (doorkey, iid validation seeds)
python scripts/reproduce.py doorkey               # 4 models x 5 seeds -> scripts/reproduce/doorkey/
python scripts/reproduce.py empty --seeds 10      # more seeds: the finished ones are kept
python scripts/reproduce.py doorkey --only-compare   # report from the runs that finished
python scripts/reproduce.py doorkey --smoke       # end-to-end check on a tiny budget
python scripts/reproduce.py copying               # the RIMs paper's copying task (scripts/copying.py)
python scripts/reproduce.py modularity_tune       # issue 26: each remedy family's coefficient (validation levels)
python scripts/reproduce.py modularity            # the chosen remedies vs lstm and rim, the bar, the carried remedy
python scripts/reproduce.py modularity_multiroom  # the carried remedy on multiroom
"""

from agents.cli.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
