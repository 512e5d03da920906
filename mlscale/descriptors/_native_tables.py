"""Index and Clebsch–Gordan tables of the native bispectrum kernel (pure Python, cached).

Conventions follow LAMMPS ``compute sna/grid`` (Thompson et al., J. Comp. Phys. 285,
316 (2015)): angular momenta are doubled integers ``j = 2J`` (0..twojmax), matrix
indices ``m = 0..j`` stand for ``M = m - j/2``. U_j is stored row by row
(``u = ublock[j] + (j+1)*mb + ma``), all layers in one flat array.

The bispectrum component (j1, j2, j), j >= j1, is

    B = 2 Σ' w(mb, ma) Re[conj(U_j[mb][ma]) Z_{j1 j2 j}[mb][ma]]

over the rows mb < j/2 (weight 1) and, for even j, the middle row mb = j/2 with
ma < mb (weight 1) and ma = mb (weight 1/2). Z is a double Clebsch–Gordan sum of
products U_j1[mb1][ma1] U_j2[mb2][ma2]; the tables below list, per (mb, ma) entry,
its non-zero products with their coefficient CG(ma) CG(mb), products of the same two
U elements merged (at twojmax 10: 3,444 entries, 47,702 products).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from math import factorial, sqrt

import numpy as np


def bispectrum_triples(twojmax: int) -> list[tuple[int, int, int]]:
    """(j1, j2, j) of every component in LAMMPS order (doubled angular momenta)."""
    return [(j1, j2, j)
            for j1 in range(twojmax + 1)
            for j2 in range(j1 + 1)
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2)
            if j >= j1]


@cache
def clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """<J1 M1 J2 M2 | J M> with doubled angular momenta, ``m`` indices 0..j (Racah).

    Exact rational arithmetic until the final square root; 0.0 when forbidden.
    """
    a1, a2, a = 2 * m1 - j1, 2 * m2 - j2, 2 * m - j   # 2*M1, 2*M2, 2*M
    if a1 + a2 != a or not 0 <= m1 <= j1 or not 0 <= m2 <= j2 or not 0 <= m <= j:
        return 0.0
    if (j1 + j2 + j) % 2 or j > j1 + j2 or j < abs(j1 - j2):
        return 0.0
    f = factorial
    total = Fraction(0)
    k_min = max(0, (j2 - j - a1) // 2, (j1 - j + a2) // 2)
    k_max = min((j1 + j2 - j) // 2, (j1 - a1) // 2, (j2 + a2) // 2)
    for k in range(k_min, k_max + 1):
        denominator = (f(k) * f((j1 + j2 - j) // 2 - k) * f((j1 - a1) // 2 - k)
                       * f((j2 + a2) // 2 - k) * f((j - j2 + a1) // 2 + k)
                       * f((j - j1 - a2) // 2 + k))
        total += Fraction((-1) ** k, denominator)
    if total == 0:
        return 0.0
    square = Fraction((j + 1) * f((j1 + j2 - j) // 2) * f((j1 - j2 + j) // 2)
                      * f((j2 - j1 + j) // 2), f((j1 + j2 + j) // 2 + 1))
    square *= (f((j1 + a1) // 2) * f((j1 - a1) // 2) * f((j2 + a2) // 2)
               * f((j2 - a2) // 2) * f((j + a) // 2) * f((j - a) // 2))
    value = sqrt(float(total * total * square))
    return value if total > 0 else -value


@dataclass(frozen=True)
class Tables:
    """Flat tables for one twojmax.

    ublock[j]: offset of layer j in U; n_u: length of U (Σ (j+1)²).
    rootpq[p, q] = sqrt(p/q) for the U recursion.
    Per Z entry e: products prod_ptr[e]:prod_ptr[e+1], U_j index entry_u[e],
    weight entry_w[e] (1 or 1/2), component entry_b[e].
    Per product: coefficient prod_c, U indices prod_u1 (of U_j1) and prod_u2 (of U_j2).
    """

    twojmax: int
    ublock: np.ndarray
    n_u: int
    rootpq: np.ndarray
    entry_u: np.ndarray
    entry_w: np.ndarray
    entry_b: np.ndarray
    prod_ptr: np.ndarray
    prod_c: np.ndarray
    prod_u1: np.ndarray
    prod_u2: np.ndarray


def _row_products(j1, j2, j, m):
    """Non-zero (CG, index_1, index_2) of one row/column index m of Z_{j1 j2 j}."""
    shift = (j1 + j2 - j) // 2
    out = []
    for m1 in range(j1 + 1):
        m2 = m + shift - m1
        if 0 <= m2 <= j2:
            c = clebsch_gordan(j1, m1, j2, m2, j, m)
            if c != 0.0:
                out.append((c, m1, m2))
    return out


@cache
def tables(twojmax: int) -> Tables:
    """The kernel tables for ``twojmax`` (built once per process)."""
    J = twojmax
    ublock = np.zeros(J + 2, dtype=np.int64)
    for j in range(J + 1):
        ublock[j + 1] = ublock[j] + (j + 1) ** 2
    rootpq = np.zeros((J + 2, J + 2))
    for p in range(1, J + 2):
        for q in range(1, J + 2):
            rootpq[p, q] = sqrt(p / q)
    entry_u, entry_w, entry_b, prod_ptr = [], [], [], [0]
    prod_c, prod_u1, prod_u2 = [], [], []
    for b, (j1, j2, j) in enumerate(bispectrum_triples(J)):
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:
                    break
                weight = 0.5 if (2 * mb == j and ma == mb) else 1.0
                # U products commute: for j1 == j2 the pairs (x, y) and (y, x) merge
                merged: dict[tuple[int, int], float] = {}
                for cb, mb1, mb2 in _row_products(j1, j2, j, mb):
                    for ca, ma1, ma2 in _row_products(j1, j2, j, ma):
                        u1 = int(ublock[j1] + (j1 + 1) * mb1 + ma1)
                        u2 = int(ublock[j2] + (j2 + 1) * mb2 + ma2)
                        key = (min(u1, u2), max(u1, u2))
                        merged[key] = merged.get(key, 0.0) + ca * cb
                for (u1, u2), c in merged.items():
                    if c != 0.0:
                        prod_c.append(c)
                        prod_u1.append(u1)
                        prod_u2.append(u2)
                prod_ptr.append(len(prod_c))
                entry_u.append(ublock[j] + (j + 1) * mb + ma)
                entry_w.append(weight)
                entry_b.append(b)
    return Tables(
        twojmax=J, ublock=ublock, n_u=int(ublock[J + 1]), rootpq=rootpq,
        entry_u=np.array(entry_u, dtype=np.int64), entry_w=np.array(entry_w),
        entry_b=np.array(entry_b, dtype=np.int64), prod_ptr=np.array(prod_ptr, dtype=np.int64),
        prod_c=np.array(prod_c), prod_u1=np.array(prod_u1, dtype=np.int64),
        prod_u2=np.array(prod_u2, dtype=np.int64),
    )
