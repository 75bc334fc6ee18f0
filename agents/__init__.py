"""Recurrent actor-critic policies and the recurrent PPO / A2C algorithms (stable-baselines3).

The recurrent core is chosen by name (``lstm``, ``gru``, ``rim``, ``rim_gru``) and built by
one factory, so baselines and RIMs run through the same code::

    from agents import RecurrentPPO
    model = RecurrentPPO("RecurrentPolicy", vec_env,
                         policy_kwargs=dict(core="rim", core_kwargs=dict(hidden_size=128, num_units=4, k=3)))
    model.learn(100_000, progress_bar=True)
"""

from agents.a2c import RecurrentA2C
from agents.cores import CORES, RecurrentCore, make_core
from agents.extractors import MiniGridCNN
from agents.policies import RecurrentPolicy
from agents.ppo import RecurrentPPO

__all__ = ["CORES", "MiniGridCNN", "RecurrentA2C", "RecurrentCore", "RecurrentPPO", "RecurrentPolicy", "make_core"]
