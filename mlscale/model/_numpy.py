"""The LDOS network evaluated with NumPy: what `mlscale predict` runs.

Prediction needs no autograd, so a rank reads the model file's tensors as NumPy arrays
(safetensors, no pickle) and evaluates the MLP with float32 BLAS matrix products. On a
CPU this is as fast as torch (docs/benchmarks.md) and the rank never imports torch,
which alone is ~200 MiB of resident memory per rank. The backward pass (:meth:`vjp`,
for forces) is a few more matrix products with the activations of one chunk kept.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from ._format import (
    DEFAULT_CHUNK_POINTS,
    SCALING,
    ModelInfo,
    check_tensors,
    in_chunks,
    linear_indices,
    predict_in_chunks,
    read_model_file,
    vjp_in_chunks,
)


def _const(h: np.ndarray, value: float):
    return h.dtype.type(value)


def _sigmoid(h):
    return _const(h, 0.5) * (1 + np.tanh(_const(h, 0.5) * h))


def _gelu(h):
    return (0.5 * h * (1.0 + erf(h / _const(h, np.sqrt(2.0))))).astype(h.dtype, copy=False)


# activation(z), in place where possible (the dtype of z kept)
ACTIVATIONS = {
    "LeakyReLU": lambda h: np.maximum(h, _const(h, 0.01) * h, out=h),
    "ReLU": lambda h: np.maximum(h, 0, out=h),
    "Tanh": lambda h: np.tanh(h, out=h),
    "Sigmoid": _sigmoid,
    "ELU": lambda h: np.where(h > 0, h, np.expm1(np.minimum(h, 0))),
    "GELU": _gelu,
    "SiLU": lambda h: h * _sigmoid(h),
}
# d activation / dz from z and a = activation(z) (torch's conventions at kinks: 0 at 0)
DERIVATIVES = {
    "LeakyReLU": lambda z, a: np.where(z > 0, _const(z, 1.0), _const(z, 0.01)),
    "ReLU": lambda z, a: (z > 0).astype(z.dtype),
    "Tanh": lambda z, a: 1 - a * a,
    "Sigmoid": lambda z, a: a * (1 - a),
    "ELU": lambda z, a: np.where(z > 0, _const(z, 1.0), a + 1),
    "GELU": lambda z, a: (0.5 * (1.0 + erf(z / _const(z, np.sqrt(2.0))))
                          + z * np.exp(-0.5 * z * z) / _const(z, np.sqrt(2.0 * np.pi))
                          ).astype(z.dtype, copy=False),
    "SiLU": lambda z, a: _silu_derivative(z),
}


# activations whose derivative is a function of the sign of a = activation(z) (a > 0 iff
# z > 0): the slope where a <= 0. Their backward pass keeps only a and scales the
# gradient in place (no pre-activation copy, no derivative array).
SIGN_SLOPES = {"ReLU": 0.0, "LeakyReLU": 0.01}
# rows per backward step of :meth:`NumpyNetwork.vjp_affine`: its three [rows, width]
# float32 temporaries per layer stay in cache (measured faster than 8192)
VJP_ROWS = 2048


def _silu_derivative(z):
    s = _sigmoid(z)
    return s * (1 + z * (1 - s))


class NumpyNetwork:
    """An LDOS model as NumPy arrays (float32 by default): raw descriptors [points,
    features] -> LDOS [points, energies] in 1/(eV·Å³), restriction applied.

    info: the model's metadata; tensors: the model file's tensors (checked against
    ``info.settings``); dtype: float32 (what predict runs) or float64 (for derivative
    checks).
    """

    def __init__(self, info: ModelInfo, tensors: dict, source="model", dtype=np.float32):
        check_tensors(info.settings, tensors, source)
        self.info = info
        self.dtype = np.dtype(dtype)
        arrays = {name: np.asarray(t, dtype=self.dtype) for name, t in tensors.items()}
        indices = linear_indices(info.settings.layers)
        # weights transposed once to [in, out], so that h @ W is a plain BLAS product
        self.weights = [np.ascontiguousarray(arrays[f"mlp.{i}.weight"].T) for i in indices]
        self.biases = [arrays[f"mlp.{i}.bias"] for i in indices]
        self.input_shift, self.input_scale, self.output_shift, self.output_scale = (
            arrays[name] for name in SCALING)
        self.activation = ACTIVATIONS[info.settings.activation]
        self.derivative = DERIVATIVES[info.settings.activation]
        slope = SIGN_SLOPES.get(info.settings.activation)
        self._sign_slope = None if slope is None else self.dtype.type(slope)

    @classmethod
    def from_file(cls, path, dtype=np.float32) -> NumpyNetwork:
        """The network of a model file (no torch, no pickle)."""
        info, tensors = read_model_file(path)
        return cls(info, tensors, path, dtype)

    @property
    def settings(self):
        return self.info.settings

    @property
    def n_features(self) -> int:
        return self.info.settings.layers[0]

    @property
    def n_energies(self) -> int:
        return self.info.settings.layers[-1]

    def __call__(self, descriptors_pf, chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """LDOS float64 [points, energies] in 1/(eV·Å³) from raw descriptors [points,
        features], evaluated in chunks of ``chunk_points`` (the extra memory is one
        chunk's activations; threads are the caller's BLAS choice)."""
        return predict_in_chunks(self.forward, self.n_features, self.n_energies,
                                 descriptors_pf, chunk_points, self.dtype)

    def vjp(self, descriptors_pf, grad_ldos_pe,
            chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """Σ_e grad_ldos_pe ∂ldos_pe/∂descriptors_pf: float64 [points, features], in the
        units of grad_ldos_pe / (eV·Å³) (descriptors are dimensionless); in chunks."""
        return vjp_in_chunks(self.vjp_chunk, self.n_features, self.n_energies,
                             descriptors_pf, grad_ldos_pe, chunk_points, self.dtype)

    def forward(self, x_pf: np.ndarray) -> np.ndarray:
        """One chunk: [points, features] -> [points, energies], restriction applied
        (the network's dtype)."""
        h = (x_pf - self.input_shift) / self.input_scale
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = h @ weight
            h += bias
            if i < last:
                h = self.activation(h)
        h *= self.output_scale
        h += self.output_shift
        restriction = self.info.settings.ldos_restriction
        if restriction == "zero_negative":
            np.maximum(h, 0, out=h)
        elif restriction == "absolute":
            np.abs(h, out=h)
        return h

    def vjp_affine(self, descriptors_pf, offset_e: np.ndarray, slope_e: np.ndarray,
                   potential_p: np.ndarray, chunk_points: int = DEFAULT_CHUNK_POINTS
                   ) -> np.ndarray:
        """:meth:`vjp` for the gradient offset_e + potential_p·slope_e (each point's ∂E/∂LDOS
        an affine function of one number per point, as the forces' electrons stage gives).

        Without an LDOS restriction the last layer's backward pass is then two vectors
        (the last layer's forward pass and its per-point products are skipped); with one,
        the same as :meth:`vjp` on the full gradient. Units as :meth:`vjp`.
        """
        offset_e = np.asarray(offset_e, dtype=float)
        slope_e = np.asarray(slope_e, dtype=float)
        potential_p = np.asarray(potential_p, dtype=float).reshape(-1, 1)
        if self.info.settings.ldos_restriction != "none":
            return self.vjp(descriptors_pf, offset_e + potential_p * slope_e, chunk_points)
        last_t = self.weights[-1].T.astype(float)
        scale_e = self.output_scale.astype(float)
        c0 = ((offset_e * scale_e) @ last_t).astype(self.dtype)
        c1 = ((slope_e * scale_e) @ last_t).astype(self.dtype)

        def chunk(x_pf, v_p1):
            return self._backward_hidden(self._forward_hidden(x_pf), c0 + v_p1 * c1)

        return in_chunks(chunk, self.n_features, min(chunk_points, VJP_ROWS), self.dtype,
                         {"descriptors": (descriptors_pf, self.n_features),
                          "potential": (potential_p, 1)})

    def vjp_chunk(self, x_pf: np.ndarray, g_pe: np.ndarray) -> np.ndarray:
        """One chunk of :meth:`vjp`: the forward pass keeping each hidden layer's
        pre-activation z and activation a, then back through the layers."""
        hidden = self._forward_hidden(x_pf)
        h = hidden[-1][1] if hidden else (x_pf - self.input_shift) / self.input_scale
        out = (h @ self.weights[-1] + self.biases[-1]) * self.output_scale + self.output_shift
        restriction = self.info.settings.ldos_restriction
        if restriction == "zero_negative":  # d max(y, 0)/dy = 1 for y >= 0, as torch
            g_pe = np.where(out >= 0, g_pe, 0)
        elif restriction == "absolute":
            g_pe = g_pe * np.sign(out)
        return self._backward_hidden(hidden, (g_pe * self.output_scale) @ self.weights[-1].T)

    def _forward_hidden(self, x_pf: np.ndarray) -> list:
        """[(z, a)] of every hidden layer of one chunk (pre-activation, activation; z is
        None for the activations of ``SIGN_SLOPES``, whose derivative needs only a)."""
        h = (x_pf - self.input_shift) / self.input_scale
        hidden = []
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            z = h @ weight
            z += bias
            if self._sign_slope is not None:
                h = self.activation(z)
                hidden.append((None, h))
            else:
                h = self.activation(z.copy())
                hidden.append((z, h))
        return hidden

    def _backward_hidden(self, hidden: list, g: np.ndarray) -> np.ndarray:
        """Descriptor gradient of one chunk from g = ∂/∂(last hidden activation) (g is
        overwritten)."""
        slope = self._sign_slope
        for (z, a), weight in zip(reversed(hidden), reversed(self.weights[:-1])):
            if z is None:  # derivative 1 where a > 0, the slope elsewhere (0 at z = 0)
                assert slope is not None  # z is None only for the sign-slope activations
                np.multiply(g, slope, out=g, where=a <= 0)
            else:
                g = g * self.derivative(z, a)
            g = g @ weight.T
        return g / self.input_scale
