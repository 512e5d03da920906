"""numba.cuda kernel of the native bispectrum: one GPU thread per grid point.

The same mathematics as the CPU kernel (``_native_kernel``), in float64, per thread:

1. the point's Cartesian position (Å) from its index in the block (C order);
2. the cell-list bins within the cutoff of the point (the CPU kernel's bins, of the
   batch's bounding box there), and in them the neighbours ``1e-20 < r² < rc_s²``;
   each neighbour's Wigner U is built layer by layer (rows mb <= j/2 and the one
   mirror row the next layer needs) and added, times switching function and species
   weight, to this thread's ``utot`` as soon as it is computed, so no neighbour list
   is stored;
3. the other rows of ``utot`` from U_j[j-mb][j-ma] = (-1)^(ma+mb) conj(U_j[mb][ma]);
4. Z/B: for every Z entry of the j >= j1 components its Clebsch–Gordan products (the
   CPU kernel's tables, :func:`mlscale.descriptors._native_tables.tables`, as device
   arrays), contracted at once with conj(U_j) into B; Z is never stored.

``utot`` and the two U layers (ping-pong halves of one array) live in the thread's
local memory (their sizes are compile-time constants of :func:`bispectrum_kernel`, one
compiled kernel per twojmax; the device functions take twojmax at run time).
All threads of a warp read the same table entry at the same time (a broadcast).
Importing this module imports ``numba.cuda``: only :mod:`mlscale.descriptors.cuda`
does, and only when a CUDA computation is asked for.
"""

from __future__ import annotations

import math
from functools import cache

from numba import cuda, float64

THREADS_PER_BLOCK = 64


@cuda.jit(device=True)
def add_neighbour(ur, ui, lr, li, ar, ai, br, bi, s, ublock, rootpq, jmax, n_layer):
    """utot += s·U(a, b): the U recursion of one neighbour (rows mb <= j/2); layer
    j of U sits in ``lr``/``li`` at offset (j % 2)·n_layer, the previous one in the
    other half."""
    lr[0] = 1.0
    li[0] = 0.0
    ur[0] += s
    for j in range(1, jmax + 1):
        cur = (j % 2) * n_layer
        prev = n_layer - cur
        for mb in range(j // 2 + 1):
            rp = prev + mb * j
            rc = cur + mb * (j + 1)
            out = ublock[j] + mb * (j + 1)
            for ma in range(j + 1):
                r1 = rootpq[j - ma, j - mb] if ma < j else 0.0
                r2 = rootpq[ma, j - mb] if ma > 0 else 0.0
                ia = rp + (ma if ma < j - 1 else j - 1)  # no min/max: see bin_range
                ib = rp + (ma - 1 if ma > 0 else 0)
                vr = r1 * (ar * lr[ia] + ai * li[ia]) - r2 * (br * lr[ib] + bi * li[ib])
                vi = r1 * (ar * li[ia] - ai * lr[ia]) - r2 * (br * li[ib] - bi * lr[ib])
                lr[rc + ma] = vr
                li[rc + ma] = vi
                ur[out + ma] += s * vr
                ui[out + ma] += s * vi
        if j % 2 == 1:  # row (j+1)/2 of layer j, the mirror of row (j-1)/2
            mb = (j - 1) // 2
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = cur + mb * (j + 1) + ma
                dst = cur + (j - mb) * (j + 1) + (j - ma)
                lr[dst] = sign * lr[src]
                li[dst] = -sign * li[src]

@cuda.jit(device=True)
def mirror_rows(ur, ui, ublock, jmax):
    for j in range(1, jmax + 1):
        for mb in range((j + 1) // 2):
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = ublock[j] + (j + 1) * mb + ma
                dst = ublock[j] + (j + 1) * (j - mb) + (j - ma)
                ur[dst] = sign * ur[src]
                ui[dst] = -sign * ui[src]

@cuda.jit(device=True)
def z_b(ur, ui, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2, out, p):
    """out[p, b] = Σ_entries of b 2 w Re[conj(U_j) Z] (entries sorted by b)."""
    current = entry_b[0]
    acc = 0.0
    for e in range(entry_u.shape[0]):
        b = entry_b[e]
        if b != current:
            out[p, current] = acc
            acc = 0.0
            current = b
        zr = 0.0
        zi = 0.0
        for k in range(prod_ptr[e], prod_ptr[e + 1]):
            c = prod_c[k]
            u1 = prod_u1[k]
            u2 = prod_u2[k]
            zr += c * (ur[u1] * ur[u2] - ui[u1] * ui[u2])
            zi += c * (ur[u1] * ui[u2] + ui[u1] * ur[u2])
        ju = entry_u[e]
        acc += 2.0 * entry_w[e] * (ur[ju] * zr + ui[ju] * zi)
    out[p, current] = acc

@cuda.jit(device=True)
def bin_range(f, halo, reg_lo, bin_w, nbins, upper):
    """First (upper 0) or one past the last (upper 1) cell-list bin along one axis
    within ``halo`` of the fractional coordinate ``f``. (Builtin min/max of two
    integers fail numba 0.68's CUDA compile without a device: conditionals instead.)"""
    if upper:
        last = int(math.floor((f + halo - reg_lo) / bin_w))
        return (last if last < nbins - 1 else nbins - 1) + 1
    first = int(math.floor((f - halo - reg_lo) / bin_w))
    return first if first > 0 else 0


@cuda.jit(device=True)
def add_bin(ur, ui, lr, li, f0, f1, f2, cell, atom_pos, atom_sp, rc_s, w_s, rfac0, rmin0,
            switchflag, ublock, rootpq, jmax, n_layer, first, last):
    """utot += s·U of the neighbours among the atoms first..last-1 (one run of bins)."""
    x = f0 * cell[0, 0] + f1 * cell[1, 0] + f2 * cell[2, 0]
    y = f0 * cell[0, 1] + f1 * cell[1, 1] + f2 * cell[2, 1]
    z = f0 * cell[0, 2] + f1 * cell[1, 2] + f2 * cell[2, 2]
    for a in range(first, last):
        dx = x - atom_pos[a, 0]
        dy = y - atom_pos[a, 1]
        dz = z - atom_pos[a, 2]
        rsq = dx * dx + dy * dy + dz * dz
        species = atom_sp[a]
        rc = rc_s[species]
        if not 1e-20 < rsq < rc * rc:
            continue
        r = math.sqrt(rsq)
        theta0 = (r - rmin0) * rfac0 * math.pi / (rc - rmin0)
        z0 = r / math.tan(theta0)
        r0inv = 1.0 / math.sqrt(rsq + z0 * z0)
        sfac = 1.0
        if switchflag and r > rmin0:
            sfac = 0.5 * (math.cos((r - rmin0) * math.pi / (rc - rmin0)) + 1.0)
        add_neighbour(ur, ui, lr, li, r0inv * z0, -r0inv * dz, r0inv * dy, -r0inv * dx,
                      sfac * w_s[species], ublock, rootpq, jmax, n_layer)


@cache
def bispectrum_kernel(twojmax: int):
    """The compiled (on first launch) kernel for ``twojmax``; its arguments are those
    of :func:`mlscale.descriptors._native_kernel.bispectrum_points` less ``twojmax``
    (index tables as int32), writing ``out [n_points, n_features]``."""
    n_u = sum((j + 1) ** 2 for j in range(twojmax + 1))
    n_layer = (twojmax // 2 + 2) * (twojmax + 1)
    two_layers = 2 * n_layer
    jmax = twojmax

    @cuda.jit
    def kernel(start, shape, grid_n, cell, atom_pos, atom_sp, rc_s, w_s, rfac0, rmin0,
               switchflag, halo, reg_lo, bin_w, nbins, bin_ptr, ublock, rootpq,
               entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2, out):
        p = cuda.grid(1)
        if p >= shape[0] * shape[1] * shape[2]:
            return
        ur = cuda.local.array(n_u, float64)
        ui = cuda.local.array(n_u, float64)
        lr = cuda.local.array(two_layers, float64)
        li = cuda.local.array(two_layers, float64)
        rest = p // shape[2]
        f0 = (start[0] + rest // shape[1]) / grid_n[0]
        f1 = (start[1] + rest % shape[1]) / grid_n[1]
        f2 = (start[2] + p % shape[2]) / grid_n[2]
        for u in range(n_u):
            ur[u] = 0.0
            ui[u] = 0.0
        for j in range(jmax + 1):
            for m in range(j + 1):
                ur[ublock[j] + (j + 1) * m + m] = 1.0  # self term, weight 1
        lo2 = bin_range(f2, halo[2], reg_lo[2], bin_w[2], nbins[2], 0)
        hi2 = bin_range(f2, halo[2], reg_lo[2], bin_w[2], nbins[2], 1)
        for bx in range(bin_range(f0, halo[0], reg_lo[0], bin_w[0], nbins[0], 0),
                        bin_range(f0, halo[0], reg_lo[0], bin_w[0], nbins[0], 1)):
            for by in range(bin_range(f1, halo[1], reg_lo[1], bin_w[1], nbins[1], 0),
                            bin_range(f1, halo[1], reg_lo[1], bin_w[1], nbins[1], 1)):
                first = (bx * nbins[1] + by) * nbins[2]
                add_bin(ur, ui, lr, li, f0, f1, f2, cell, atom_pos, atom_sp, rc_s, w_s,
                        rfac0, rmin0, switchflag, ublock, rootpq, jmax, n_layer,
                        bin_ptr[first + lo2], bin_ptr[first + hi2])
        mirror_rows(ur, ui, ublock, jmax)
        z_b(ur, ui, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2, out, p)

    return kernel
