"""Recurrent Independent Mechanisms (Goyal et al. 2019) as drop-in ``nn.LSTM``/``nn.GRU`` modules.

Imports torch only::

    from rims import RIMLSTM
    model = RIMLSTM(600, 300, 6, 4)  # was nn.LSTM(600, 300): 6 units, 4 active per step
"""

from rims.cell import RIMCell
from rims.info import RIMInfo
from rims.options import COMMUNICATION_UPDATES, SELECTION_RULES, RIMOptions
from rims.rnn import RIMGRU, RIMLSTM

__all__ = ["COMMUNICATION_UPDATES", "RIMGRU", "RIMLSTM", "SELECTION_RULES", "RIMCell", "RIMInfo", "RIMOptions"]
__version__ = "0.1.0"
