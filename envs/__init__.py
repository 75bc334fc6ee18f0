"""MiniGrid generalisation splits, observation wrappers, perturbations and the VecEnv factory.

Never imports :mod:`agents`. Built under issues 3 and 4.
"""
