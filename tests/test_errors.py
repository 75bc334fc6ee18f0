"""Bad arguments fail at construction with the argument name, the expectation and the value."""

from __future__ import annotations

import pytest

from rims import RIMGRU, RIMLSTM, RIMCell

CLASSES = [RIMLSTM, RIMGRU]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "pattern"),
    [
        ((8, 16, 4, 0), {}, ValueError, r"k must be a positive int \(>= 1\), got 0"),
        ((8, 16, 4, 5), {}, ValueError, r"k must be in \[1, num_units\] = \[1, 4\], got k=5"),
        ((8, 18, 4, 2), {}, ValueError, r"hidden_size must be divisible by num_units=4.*got hidden_size=18"),
        ((0, 16, 4, 2), {}, ValueError, r"input_size must be a positive int \(>= 1\), got 0"),
        ((8, -16, 4, 2), {}, ValueError, r"hidden_size must be a positive int \(>= 1\), got -16"),
        ((8, 16, 0, 2), {}, ValueError, r"num_units must be a positive int \(>= 1\), got 0"),
        ((8, 16, 4.0, 2), {}, TypeError, r"num_units must be a positive int, got 4.0 of type float"),
        ((8, 16, True, 1), {}, TypeError, r"num_units must be a positive int, got True of type bool"),
        ((8, 16, 4, 2), {"num_layers": 0}, ValueError, r"num_layers must be a positive int \(>= 1\), got 0"),
        ((8, 16, 4, 2), {"dropout": 1.5}, ValueError, r"dropout must be a float in \[0, 1\), got 1.5"),
        ((8, 16, 4, 2), {"attention_dropout": -0.1}, ValueError, r"attention_dropout must be a float in \[0, 1\)"),
        (
            (8, 16, 4, 2),
            {"selection": "random"},
            ValueError,
            r"selection must be one of \['null_attention', 'input_score'\], got 'random'",
        ),
        ((8, 16, 4, 2), {"num_comm_heads": 0}, ValueError, r"num_comm_heads must be a positive int \(>= 1\), got 0"),
        ((8, 16, 4, 2), {"input_value_size": 0}, ValueError, r"input_value_size must be a positive int"),
    ],
)
def test_bad_construction_arguments(cls: type, args: tuple, kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        cls(*args, **kwargs)


def test_bad_dynamics_name() -> None:
    with pytest.raises(ValueError, match=r"dynamics must be one of \['lstm', 'gru'\], got 'rnn'"):
        RIMCell(8, 16, 4, 2, dynamics="rnn")


def test_lstm_state_must_be_a_pair() -> None:
    import torch

    m = RIMLSTM(8, 16, 4, 2)
    with pytest.raises(TypeError, match=r"hx to be a tuple \(h_0, c_0\)"):
        m(torch.randn(3, 2, 8), torch.zeros(1, 2, 16))


def test_gru_state_must_be_a_tensor() -> None:
    import torch

    m = RIMGRU(8, 16, 4, 2)
    with pytest.raises(TypeError, match="hx to be a Tensor"):
        m(torch.randn(3, 2, 8), (torch.zeros(1, 2, 16),))


def test_packed_sequence_is_rejected_clearly() -> None:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    m = RIMLSTM(8, 16, 4, 2)
    packed = pack_padded_sequence(torch.randn(3, 2, 8), [3, 2])
    with pytest.raises(TypeError, match="PackedSequence"):
        m(packed)
