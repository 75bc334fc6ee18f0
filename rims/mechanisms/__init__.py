"""The mechanisms of the RIM family: what one step of a layer computes.

One module per mechanism, composed per step by :mod:`rims.mechanisms.stepwise`:

- :mod:`~rims.mechanisms.input_attention`: input attention over ``{input, (top-down,) null}``
  and the selection of the ``k`` active units;
- :mod:`~rims.mechanisms.dynamics`: the units' own LSTM/GRU update (inactive units keep their
  state); :mod:`~rims.mechanisms.schemata`: the same with a few shared weight sets (SCOFF);
- :mod:`~rims.mechanisms.communication`: pairwise attention among the units
  (:mod:`~rims.mechanisms.unit_attention`); :mod:`~rims.mechanisms.workspace`: communication
  through a shared workspace instead;
- :mod:`~rims.mechanisms.layer` and :mod:`~rims.mechanisms.weights`: what a mechanism reads of a
  layer (its sizes and options, its parameters) and the parameters rearranged for one call.

A mechanism takes tensors, the layer's sizes and options; never the layer module itself. Nothing
here imports :mod:`rims.fast_paths` (``tests/test_layering.py``).
"""
