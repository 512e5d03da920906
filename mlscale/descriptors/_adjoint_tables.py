"""Gradient tables of the bispectrum adjoint (pure Python, cached per twojmax).

B_b = Σ_e 2 w_e Re[conj(U_ju) Z_e] with Z_e = Σ_k c_k U_u1 U_u2 (``_native_tables``).
Taking real and imaginary parts of every U element as independent variables, the
gradient of Σ_b β_b B_b with respect to U_u (as the complex number ∂/∂Re + i ∂/∂Im) is

    2 w_e β_b Z_e                      for u = ju of entry e (the Z pass), plus
    Σ_b β_b Σ_items c' U_ju conj(U_partner)   over the products in which u is a factor,

c' = 2 w_e c_k, partner the other factor of the product (both roles of a product are
listed; items with the same (u, b, ju, partner) are merged). The second sum is what
these tables list: per U element u its groups ``u_ptr[u]:u_ptr[u+1]``, per group the
component ``group_b`` and items ``group_ptr[g]:group_ptr[g+1]`` (coefficient
``item_c``, U indices ``item_ju`` and ``item_partner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ._native_tables import tables


@dataclass(frozen=True)
class GradientTables:
    """Flat gather tables of ∂B/∂U for one twojmax (see the module docstring)."""

    u_ptr: np.ndarray
    group_b: np.ndarray
    group_ptr: np.ndarray
    item_c: np.ndarray
    item_ju: np.ndarray
    item_partner: np.ndarray


@cache
def gradient_tables(twojmax: int) -> GradientTables:
    """The gather tables for ``twojmax`` (built once per process)."""
    t = tables(twojmax)
    merged: dict[tuple[int, int, int, int], float] = {}
    for e in range(t.entry_u.size):
        w2 = 2.0 * float(t.entry_w[e])
        b, ju = int(t.entry_b[e]), int(t.entry_u[e])
        for k in range(t.prod_ptr[e], t.prod_ptr[e + 1]):
            c = w2 * float(t.prod_c[k])
            u1, u2 = int(t.prod_u1[k]), int(t.prod_u2[k])
            for u, partner in ((u1, u2), (u2, u1)):
                key = (u, b, ju, partner)
                merged[key] = merged.get(key, 0.0) + c
    keys = sorted(key for key, c in merged.items() if c != 0.0)
    u_ptr = np.zeros(t.n_u + 1, dtype=np.int64)
    group_b, group_ptr = [], [0]
    for i, (u, b, _, _) in enumerate(keys):
        if i == 0 or keys[i - 1][:2] != (u, b):
            if i > 0:
                group_ptr.append(i)
            group_b.append(b)
            u_ptr[u + 1] += 1
    group_ptr.append(len(keys))
    np.cumsum(u_ptr, out=u_ptr)
    return GradientTables(
        u_ptr=u_ptr, group_b=np.array(group_b, dtype=np.int64),
        group_ptr=np.array(group_ptr, dtype=np.int64),
        item_c=np.array([merged[key] for key in keys]),
        item_ju=np.array([key[2] for key in keys], dtype=np.int64),
        item_partner=np.array([key[3] for key in keys], dtype=np.int64))
