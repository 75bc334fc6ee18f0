"""The plain RIM's fast paths: how :mod:`rims.mechanisms` is computed quickly, for the options
that :data:`rims.fast_paths.dispatch.SUPPORTED` lists (any other value is refused by name).

- :mod:`~rims.fast_paths.dispatch`: what the fast paths support, and the calls from the layer;
- :mod:`~rims.fast_paths.fused`: the whole training sequence as one autograd node with a
  hand-written backward, its time loops in :mod:`~rims.fast_paths.python_loops` or in C++
  (``csrc/fused_loop.cpp``, built by :mod:`~rims.fast_paths.native`, which also runs the acting step);
- :mod:`~rims.fast_paths.buffers`: the node's per-step buffers, taken from the scratch-tensor
  pool :mod:`~rims.fast_paths.scratch`.
"""
