"""Recurrent actor-critic policies and the recurrent PPO / A2C algorithms (stable-baselines3).

Depends on :mod:`rims` and :mod:`envs`; the recurrent core is chosen by name
(``lstm``, ``gru``, ``rim``, ``rim_gru``). Built under issue 3.
"""
