"""The RIMs paper's copying task: nn.LSTM against RIMLSTM, trained on blank 50, tested on 50 and 200.

python scripts/copying.py                                  # lstm and rim, 3 seeds -> scripts/reproduce/copying/
python scripts/copying.py --models lstm rim rim_residual --seeds 5
python scripts/copying.py --smoke                          # tiny end-to-end run
See agents/cli/copying.py.
"""

from agents.cli.copying import main

if __name__ == "__main__":
    raise SystemExit(main())
