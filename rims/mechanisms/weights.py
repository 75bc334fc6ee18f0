"""A RIM layer's parameters rearranged for one forward call.

The input side of a step is affine in the attention on the input, so its projection by the
per-unit (or per-schema) input weights is computed for the whole sequence before the time loop
(``W_ih (x W_v)``), and the hidden-side product and the input query share one batched matmul.
This module builds those rearranged tensors from a layer's parameters (differentiably) and
computes the input projection in whichever order costs fewer multiply-adds.

Shapes: ``U`` units, ``W`` weight sets (``U`` per-unit weights, or ``S`` schemata), ``d`` unit
size, ``G`` gate width, ``H`` input heads with key ``K`` and value ``V``, ``I`` input size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rims.mechanisms.layer import LayerParameters, LayerSpec
from rims.mechanisms.zero_grad import attach_zero_grad


class Weights(NamedTuple):
    """Parameters rearranged for one forward call."""

    key: Tensor  # (H*K, I) key weight divided by sqrt(K)
    ih: Tensor  # (H, V, W*G) input weights of the weight sets side by side
    h: Tensor  # per-unit: (U, d, G + H*K) recurrent and query weights; schemata: (U, d, H*K) query only
    h_bias: Tensor | None  # (U, 1, G + H*K) (LSTM: includes the input-side bias) or (U, 1, H*K)
    h_split: tuple[int, int]  # (G, H*K); (0, H*K) with schemata
    x_bias: Tensor | None  # (W, 1, G) input-side bias (GRU only)
    null_proj: Tensor | None  # (W, H, G) null value's projection, when it is not folded into a bias
    null_key: Tensor | None  # (H, K) scaled key bias, only for the input_score rule
    combined: Tensor | None  # (H, I, W*G) W_v W_ih, only when cached and cheaper per row
    hh: Tensor | None  # schemata: (S, d, G) recurrent weights; per-unit: None (part of ``h``)
    hh_bias: Tensor | None  # schemata: (S, 1, G) (LSTM: includes the input-side bias)


def build_weights(spec: LayerSpec, p: LayerParameters, fold: bool) -> Weights:
    """:class:`Weights` of a layer with ``spec`` and parameters ``p`` (differentiable).

    :param fold: fold the null value's projection ``W_ih b_v`` into the input bias, which is
        exact when the candidates' attention adds up to one (no attention dropout); a top-down
        value is then taken relative to the null value (:func:`top_projection`).
    """
    heads, key_size, value = spec.options.num_input_heads, spec.options.input_key_size, spec.options.input_value_size
    sets, gates = p.weight_ih.shape[0], p.weight_ih.shape[2]
    w_ih = p.weight_ih.view(sets, heads, value, gates)
    ih = w_ih.permute(1, 2, 0, 3).reshape(heads, value, sets * gates)  # (H, V, W*G)
    lstm = spec.options.dynamics == "lstm"
    schemata = spec.options.num_schemata is not None
    null_proj = x_bias = h_bias = hh_bias = null_key = None
    if spec.bias:
        # W_ih b_v per head and weight set: one (1 x V) @ (V x W*G) product per head
        per_head = torch.bmm(p.bias_value.view(heads, 1, value), ih).view(heads, sets, gates).transpose(0, 1)
        null_proj = None if fold else per_head
        x_bias = (p.bias_ih + per_head.sum(1) if fold else p.bias_ih).unsqueeze(1)  # (W, 1, G)
        hh_bias = p.bias_hh.unsqueeze(1) + x_bias if lstm else p.bias_hh.unsqueeze(1)
        query_bias = p.bias_query.unsqueeze(1)
        h_bias = query_bias if schemata else torch.cat([hh_bias, query_bias], dim=-1)
        if spec.options.selection == "input_score":
            null_key = p.bias_key.view(heads, key_size) / math.sqrt(key_size)
    return Weights(
        key=attach_zero_grad(p.weight_key / math.sqrt(key_size), p.bias_key),  # bias_key: see RIMCell
        ih=ih,
        h=p.weight_query if schemata else torch.cat([p.weight_hh, p.weight_query], dim=-1),
        h_bias=h_bias,
        h_split=(0 if schemata else gates, heads * key_size),
        x_bias=None if lstm else x_bias,
        null_proj=null_proj,
        null_key=null_key,
        combined=None,
        hh=p.weight_hh if schemata else None,
        hh_bias=hh_bias if schemata else None,
    )


def combined_weight(spec: LayerSpec, p: LayerParameters, w_ih: Tensor, value_weight: Tensor | None = None) -> Tensor:
    """``W_v W_ih`` per input head, ``(H, I, W*G)``, from ``w_ih`` ``(H, V, W*G)``.

    :param value_weight: ``(H*V, I)`` value weight; ``None`` for the input's ``weight_value``.
    """
    value_weight = p.weight_value if value_weight is None else value_weight
    heads, value = spec.options.num_input_heads, spec.options.input_value_size
    return torch.bmm(value_weight.view(heads, value, -1).transpose(1, 2), w_ih)


def combine_for_steps(spec: LayerSpec, p: LayerParameters, w: Weights, rows: int) -> Weights:
    """``w`` with ``combined`` set when projecting ``rows`` input rows, given one step at a time,
    through ``W_v W_ih`` (built once) costs fewer multiply-adds than the two-step product
    (:func:`prefer_combined`, with the input's gradient when gradients are recorded)."""
    grad = torch.is_grad_enabled()
    if not prefer_combined(rows, spec.input_size, spec.options.input_value_size, w.ih.shape[2], grad, grad):
        return w
    return w._replace(combined=combined_weight(spec, p, w.ih))


class TopProjection(NamedTuple):
    """How a layer projects its top-down input (BRIMs) for one forward call: either through the
    combined weight ``W_t W_ih`` or in two steps ``(t W_t + b) W_ih``."""

    weight: Tensor  # (H*V, T) value weight of the top-down input
    bias: Tensor | None  # (H*V,) its value bias (relative to the null value's when that is folded)
    combined: Tensor | None  # (H, T, W*G) W_t W_ih, when cheaper
    combined_bias: Tensor | None  # (H, 1, W*G) the bias's projection, with ``combined``


def top_projection(spec: LayerSpec, p: LayerParameters, w: Weights, fold: bool, rows: int) -> TopProjection:
    """The top-down projection of a layer for ``rows`` rows given a step at a time (differentiable).

    :param fold: the null value's projection is folded into the input bias (:func:`build_weights`),
        so the top-down value is taken relative to the null value: its bias is ``b_t - b_v``.
    """
    weight, bias = p.weight_value_top, p.bias_value_top
    assert weight is not None and spec.top_down_size is not None
    if fold and bias is not None:
        bias = bias - p.bias_value
    grad = torch.is_grad_enabled()
    if not prefer_combined(rows, spec.top_down_size, spec.options.input_value_size, w.ih.shape[2], grad, grad):
        return TopProjection(weight, bias, None, None)
    heads, value = spec.options.num_input_heads, spec.options.input_value_size
    combined = combined_weight(spec, p, w.ih, weight)
    combined_bias = None if bias is None else torch.bmm(bias.view(heads, 1, value), w.ih)
    return TopProjection(weight, bias, combined, combined_bias)


def combined_if_cheaper(spec: LayerSpec, p: LayerParameters, w_ih: Tensor) -> Tensor | None:
    """``W_v W_ih`` ``(H, I, W*G)`` if multiplying by it beats the two-step product per row.

    Only worth building when it is reused, i.e. cached between acting steps.
    """
    size, value, width = spec.input_size, spec.options.input_value_size, w_ih.shape[2]
    if size * width >= size * value + value * width:  # per-row costs; building it is amortised
        return None
    return combined_weight(spec, p, w_ih)


def input_projection(spec: LayerSpec, p: LayerParameters, x: Tensor, w: Weights) -> Tensor:
    """``W_ih (x W_v)`` for every weight set and input head, ``(H, rows, W * G)``.

    Computed as ``(x W_v) W_ih`` or as ``x (W_v W_ih)``, whichever needs fewer multiply-adds
    forward and, when gradients are recorded, backward (see :func:`prefer_combined`);
    ``W_v W_ih`` is reused when cached (acting under ``no_grad``).

    :param x: ``(rows, input_size)``.
    :param w: rearranged weights; ``w.ih`` is ``(H, V, W * G)``.
    """
    if w.combined is not None:
        return torch.mm(x, w.combined[0]).unsqueeze(0) if len(w.combined) == 1 else torch.matmul(x, w.combined)
    rows = x.shape[0]
    heads, value, size = spec.options.num_input_heads, spec.options.input_value_size, spec.input_size
    width = w.ih.shape[2]
    grad = torch.is_grad_enabled()
    if not prefer_combined(rows, size, value, width, grad, grad and x.requires_grad):
        values = F.linear(x, p.weight_value).view(rows, heads, value).transpose(0, 1)  # (H, rows, V)
        return torch.bmm(values, w.ih)
    combined = combined_weight(spec, p, w.ih)  # (H, I, W*G)
    if heads == 1:  # a plain matrix product rather than a batch-of-one matmul
        return torch.mm(x, combined[0]).unsqueeze(0)
    return torch.matmul(x, combined)


def prefer_combined(rows: int, size: int, value: int, width: int, grad: bool, input_grad: bool) -> bool:
    """Whether ``x (W_v W_ih)`` costs fewer multiply-adds than ``(x W_v) W_ih``.

    Per input head, with ``R`` rows, input ``I``, value ``V`` and output ``W * G``: two-step
    forward ``R I V + R V W``, backward ``2 R V W + R I V`` (+ ``R V I`` for the input's
    gradient); combined forward ``I V W + R I W``, backward ``R I W + 2 I V W`` (+ ``R W I``
    for the input's gradient).
    """
    two_step = rows * (size * value + value * width)
    combined = size * value * width + rows * size * width
    if grad:
        two_step += 2 * rows * value * width + rows * size * value
        combined += rows * size * width + 2 * size * value * width
        if input_grad:
            two_step += rows * value * size
            combined += rows * width * size
    return combined < two_step


def top_key(spec: LayerSpec, p: LayerParameters) -> tuple[Tensor, Tensor | None]:
    """The top-down key's weight divided by ``sqrt(K)``, ``(H*K, T)``, and its bias minus the null
    key's, divided by ``sqrt(K)``, ``(H*K,)`` or ``None`` (scores relative to null)."""
    assert p.weight_key_top is not None
    scale = math.sqrt(spec.options.input_key_size)
    bias = None if p.bias_key_top is None else (p.bias_key_top - p.bias_key) / scale
    return p.weight_key_top / scale, bias
