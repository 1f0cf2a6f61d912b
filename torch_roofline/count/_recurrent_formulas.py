"""FLOP formulas of the fused recurrent kernels: oneDNN's RNN layer (``nn.LSTM`` on CPU),
cuDNN's RNN, and the fused LSTM/GRU cells, forward and backward.

Convention, per time step and batch row (H hidden units, I inputs, G gates: LSTM 4, GRU 3,
RNN 1):

* **matrix**: the input and hidden projections, 2 FLOPs per MAC: 2 * G*H * (I + H)
  (``2 * (numel(W_ih) + numel(W_hh))``; with a projection, ``W_hh`` is [G*H, P]);
* **cell** (vector): the sum of the two projections (1 per gate element), then
  LSTM: 4 activations + c' = f*c + i*g (3) + h' = o*tanh(c') (2): 13 per hidden unit;
  GRU: r, z (sum + sigmoid: 4), n = tanh(x_n + r*h_n) (3), h' = (1-z)*n + z*h (4): 11;
  RNN: sum + activation: 2. Bias adds are not counted, as for ``addmm`` (the fused cells,
  which take the biases as inputs, count 1 per gate element per bias).
* **backward**: twice the forward's matrix work (the gradients of the inputs and hidden
  states, and of the weights) and twice its cell work, plus the bias gradients (1 per gate
  element). NB: an operation count of the textbook backward.

These are the counts of the decomposed ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (``aten.lstm``
and friends run as ``addmm`` + cell ops when no fused kernel is taken), up to the
decomposition's own choices (which adds it fuses), so a model counts about the same on
either path.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from torch_roofline.count._registry import FlopCount, register_formula

aten = torch.ops.aten

#: Cell FLOPs per hidden unit per step (without the projections' sum), by gate count.
_CELL = {4: 9, 3: 8, 1: 1}
#: cuDNN's ``mode`` -> gates: RNN_RELU, RNN_TANH, LSTM, GRU.
_CUDNN_GATES = {0: 1, 1: 1, 2: 4, 3: 3}


def _cell(gates: int, hidden: int) -> Optional[int]:
    """Vector FLOPs of one cell step of one batch row: the projections' sum + the cell math."""
    per_unit = _CELL.get(gates)
    return None if per_unit is None else hidden * (gates + per_unit)


def _layer(rows: int, w_ih: Sequence[int], w_hh: Sequence[int], hidden: int, backward: bool = False,
           biases: bool = False) -> Optional[FlopCount]:
    """One layer (one direction) over ``rows`` = time steps x batch rows."""
    gates = w_ih[0] // hidden if hidden else 0
    cell = _cell(gates, hidden)
    if cell is None:
        return None
    matrix = 2 * rows * (math.prod(w_ih) + math.prod(w_hh))
    vector = rows * cell
    if backward:
        matrix, vector = 2 * matrix, 2 * vector + (rows * w_ih[0] if biases else 0)
    return FlopCount(matrix + vector, matrix // 2, "matrix")


@register_formula(aten.mkldnn_rnn_layer)
def _mkldnn_rnn_layer_flops(x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, hx: Any, cx: Any, reverse: bool,
                            batch_sizes: Any, mode: int, hidden_size: int, *args: Any,
                            out: Any = None) -> Optional[FlopCount]:
    """One oneDNN RNN layer: x [T, B, I] (or [B, T, I]): T*B steps of projections + cell."""
    return _layer(math.prod(x[:-1]), w_ih, w_hh, hidden_size)


@register_formula(aten.mkldnn_rnn_layer_backward)
def _mkldnn_rnn_layer_backward_flops(x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, hx: Any, cx: Any,
                                     output: Any, hy: Any, cy: Any, grad_output: Any, grad_hy: Any, grad_cy: Any,
                                     reverse: bool, mode: int, hidden_size: int, num_layers: int, has_biases: bool,
                                     *args: Any, out: Any = None) -> Optional[FlopCount]:
    """Backward of one oneDNN RNN layer: 2 x the forward's matrix and cell work + bias gradients."""
    return _layer(math.prod(x[:-1]), w_ih, w_hh, hidden_size, backward=True, biases=bool(has_biases))


def _cudnn_rows(x: Any, batch_sizes: Any) -> int:
    return x[0] if batch_sizes else x[0] * x[1]  # packed [sum(T_b), I] or [T, B, I]


def _cudnn(x: Any, weights: Sequence[Any], mode: int, hidden: int, num_layers: int, bidirectional: bool,
           batch_sizes: Any, backward: bool) -> Optional[FlopCount]:
    gates = _CUDNN_GATES.get(int(mode))
    cell = _cell(gates, hidden) if gates else None
    if cell is None:
        return None
    rows = _cudnn_rows(x, batch_sizes)
    matrix = 2 * rows * sum(math.prod(w) for w in weights if len(w) == 2)
    vector = rows * cell * num_layers * (2 if bidirectional else 1)
    if backward:
        matrix, vector = 2 * matrix, 2 * vector + rows * gates * hidden * num_layers * (2 if bidirectional else 1)
    return FlopCount(matrix + vector, matrix // 2, "matrix")


@register_formula(aten._cudnn_rnn)
def _cudnn_rnn_flops(x: Any, weight: Sequence[Any], weight_stride0: int, weight_buf: Any, hx: Any, cx: Any,
                     mode: int, hidden_size: int, proj_size: int, num_layers: int, batch_first: bool,
                     dropout: float, train: bool, bidirectional: bool, batch_sizes: Any, *args: Any,
                     out: Any = None) -> Optional[FlopCount]:
    """cuDNN RNN, all layers and directions: every 2-D weight does one MAC per step and row, plus the cells."""
    return _cudnn(x, weight, mode, hidden_size, num_layers, bidirectional, batch_sizes, backward=False)


@register_formula(aten._cudnn_rnn_backward)
def _cudnn_rnn_backward_flops(x: Any, weight: Sequence[Any], weight_stride0: int, weight_buf: Any, hx: Any,
                              cx: Any, output: Any, grad_output: Any, grad_hy: Any, grad_cy: Any, mode: int,
                              hidden_size: int, proj_size: int, num_layers: int, batch_first: bool,
                              dropout: float, train: bool, bidirectional: bool, batch_sizes: Any, *args: Any,
                              out: Any = None) -> Optional[FlopCount]:
    """cuDNN RNN backward: 2 x the forward's matrix and cell work + bias gradients."""
    return _cudnn(x, weight, mode, hidden_size, num_layers, bidirectional, batch_sizes, backward=True)


def _fused_cell(gates: int) -> Any:
    def formula(input_gates: Any, hidden_gates: Any, state: Any, input_bias: Any = None, hidden_bias: Any = None,
                *, out: Any = None) -> int:
        """[B, G*H] gates: the sum (1 per gate element, +1 per bias) and the cell math."""
        rows, width = input_gates[0], input_gates[1]
        hidden = width // gates
        biases = (input_bias is not None) + (hidden_bias is not None)
        return rows * (width * (1 + biases) + hidden * _CELL[gates])

    return formula


def _fused_cell_backward(gates: int) -> Any:
    def formula(*args: Any, out: Any = None, **kw: Any) -> Optional[int]:
        """2 x the forward cell math per hidden unit (+ the gates' gradient sum), [B, H] states."""
        first = next((a for a in args if isinstance(a, torch.Size)), None)
        if first is None or len(first) != 2:
            return None
        rows, width = first  # grad_hy [B, H]
        return rows * width * 2 * (gates + _CELL[gates])

    return formula


if hasattr(aten, "_thnn_fused_lstm_cell"):
    register_formula(aten._thnn_fused_lstm_cell)(_fused_cell(4))
if hasattr(aten, "_thnn_fused_gru_cell"):
    register_formula(aten._thnn_fused_gru_cell)(_fused_cell(3))
for _name, _gates in (("_thnn_fused_lstm_cell_backward_impl", 4), ("_thnn_fused_lstm_cell_backward", 4),
                      ("_thnn_fused_gru_cell_backward", 3), ("_thnn_differentiable_lstm_cell_backward", 4),
                      ("_thnn_differentiable_gru_cell_backward", 3)):
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name))(_fused_cell_backward(_gates))
