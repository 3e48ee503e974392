"""The scalar functions behind the tensor dialect's ``activation`` op.

Each takes the input array and the op's ``alpha`` attribute (unused by most) and returns the
function's value element-wise. Functions with more parameters are affine maps around one of these
(the converters write them so): Clip and HardSigmoid around ``clip01``, Selu around ``elu``.
``replace-activations`` fits polynomials to these; the interpreter
and calibration use them as the reference semantics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ACTIVATIONS"]


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


ACTIVATIONS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "relu": lambda x, a: np.maximum(x, 0.0),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, a * x),
    "sigmoid": lambda x, a: 0.5 * (1.0 + np.tanh(0.5 * x)),  # overflow-free logistic
    "tanh": lambda x, a: np.tanh(x),
    "softplus": lambda x, a: np.logaddexp(0.0, x),
    "erf": lambda x, a: _erf(x),
    "gelu": lambda x, a: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "gelu_tanh": lambda x, a: 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "elu": lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))),
    # Clip and HardSigmoid are affine maps around this hard limit to [0, 1]
    "clip01": lambda x, a: np.clip(x, 0.0, 1.0),
    "hard_swish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda x, a: x * np.tanh(np.logaddexp(0.0, x)),
    "abs": lambda x, a: np.abs(x),
}
