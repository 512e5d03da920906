"""numba kernel of the bispectrum adjoint: forces Σ_p Σ_f β_pf ∂B_pf/∂d on every atom image.

The same batches of ``BATCH`` grid points as the descriptor kernel (``_native_kernel``),
whose position, candidate and U stages it reuses unchanged. Per pair of batches:

1. neighbours as the descriptor kernel, plus ∂(a, b, s)/∂d per Cartesian axis, where
   d = point - atom (Å) is the displacement, (a, b) its Cayley–Klein parameters and s
   the species weight times the switching function, and the image each lane refers to;
2. U stage: utot, exactly as the descriptor kernel computes it;
3. Y stage, on ``Y_LANES`` = two batches side by side (the set-up of its per-product
   loop, mostly LLVM's run-time alias checks, is then shared by twice the lanes:
   measured ~10 % faster than one batch, and faster than L2-sized slices or four
   batches): reverse mode of the Z/B stage, ytot = ∂(Σ_f β_f B_f)/∂utot (real and
   imaginary parts taken as independent variables), in one pass over the Clebsch–Gordan
   products (each product adds to Z, needed for the ∂/∂U_j term, and scatters to the
   gradients of its two U factors: SNAP's Y = Σ β·∂B/∂U, formed once per point); then
   the gradient of the mirrored rows (mb > j/2) folded into the rows they are copied
   from;
4. dU stage, per batch: per neighbour, U by the same layer recursion as the U stage,
   then reverse mode through it to ∂(ytot·U)/∂(a, b), contracted with ∂(a, b, s)/∂d
   per axis:
   ∂E/∂d = s ytot·∂U/∂d + (∂s/∂d) ytot·U.

The force on an image is F = -∂E/∂R = +∂E/∂d (R enters through d = x - R). Batches are
split into one contiguous range per chunk, each chunk with its own accumulator row (no
races); the caller sums the chunks and the images of each atom. ∂B/∂R is never stored.
Lane layout as in ``_native_kernel``: real parts in columns ``0:n``, imaginary in ``n:2n``.

Caching: numba's cache checks only the file of the cached function, so after a change
to ``_native_kernel.py`` (whose position, candidate and U stages are compiled into this
kernel) touch this file too, or the cached adjoint keeps the old stages.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._native_kernel import BATCH, _batch_positions, _candidates, _u_stage

_FASTMATH = {"contract"}    # allow FMA; no reassociation
_B = BATCH
Y_LANES = 2 * BATCH         # lanes of the Y stage: two batches side by side
_YL = Y_LANES


@numba.njit(cache=True, fastmath=_FASTMATH)
def _neighbours_d(pos, cand, cand_img, img_sp, rc_s, w_s, rfac0, rmin0, switchflag):
    """Neighbours with derivatives.

    Returns ab [kmax, 5*BATCH] (a_r, a_i, b_r, b_i, s as ``_native_kernel._neighbours``),
    dab [kmax, 15*BATCH] (for axis v = 0, 1, 2 the lane blocks 5v..5v+4 hold ∂a_r, ∂a_i,
    ∂b_r, ∂b_i, ∂s along v, 1/Å) and img [kmax, BATCH] (image index, -1 for dummies).
    """
    ncand = cand.shape[1]
    rsq = np.empty((_B, ncand))
    kmax = 0
    for p in range(_B):
        count = 0
        for c in range(ncand):
            dx = pos[p, 0] - cand[0, c]
            dy = pos[p, 1] - cand[1, c]
            dz = pos[p, 2] - cand[2, c]
            rsq[p, c] = dx * dx + dy * dy + dz * dz
            if 1e-20 < rsq[p, c] < cand[3, c]:
                count += 1
        kmax = max(kmax, count)
    ab = np.zeros((kmax, 5 * _B))
    ab[:, :_B] = 1.0
    dab = np.zeros((kmax, 15 * _B))
    img = np.full((kmax, _B), -1, np.int64)
    for p in range(_B):
        k = 0
        for c in range(ncand):
            if not 1e-20 < rsq[p, c] < cand[3, c]:
                continue
            d = (pos[p, 0] - cand[0, c], pos[p, 1] - cand[1, c], pos[p, 2] - cand[2, c])
            sp = img_sp[cand_img[c]]
            _cayley_klein(d, rsq[p, c], rc_s[sp], w_s[sp], rfac0, rmin0, switchflag,
                          ab, dab, k, p)
            img[k, p] = cand_img[c]
            k += 1
    return ab, dab, img


@numba.njit(cache=True, fastmath=_FASTMATH)
def _cayley_klein(d, rsq, rc, w, rfac0, rmin0, switchflag, ab, dab, k, p):
    """(a, b, s) of displacement d (Å) and their derivatives into ab[k], dab[k], lane p.

    The descriptor kernel's formulas (LAMMPS ``compute_uarray``), differentiated as
    LAMMPS ``compute_duarray`` does.
    """
    r = math.sqrt(rsq)
    rscale0 = rfac0 * math.pi / (rc - rmin0)
    theta0 = (r - rmin0) * rscale0
    z0 = r / math.tan(theta0)
    dz0dr = z0 / r - (r * rscale0) * (rsq + z0 * z0) / rsq
    r0inv = 1.0 / math.sqrt(rsq + z0 * z0)
    dr0invdr = -r0inv ** 3 * (r + z0 * dz0dr)
    sfac = 1.0
    dsfacdr = 0.0
    if switchflag and r > rmin0:
        arg = (r - rmin0) * math.pi / (rc - rmin0)
        sfac = 0.5 * (math.cos(arg) + 1.0)
        dsfacdr = -0.5 * math.sin(arg) * math.pi / (rc - rmin0)
    ab[k, p] = r0inv * z0
    ab[k, _B + p] = -r0inv * d[2]
    ab[k, 2 * _B + p] = r0inv * d[1]
    ab[k, 3 * _B + p] = -r0inv * d[0]
    ab[k, 4 * _B + p] = sfac * w
    for v in range(3):
        u = d[v] / r
        dr0inv = dr0invdr * u
        o = 5 * v * _B + p
        dab[k, o] = dz0dr * u * r0inv + z0 * dr0inv
        dab[k, o + _B] = -d[2] * dr0inv - (r0inv if v == 2 else 0.0)
        dab[k, o + 2 * _B] = d[1] * dr0inv + (r0inv if v == 1 else 0.0)
        dab[k, o + 3 * _B] = -d[0] * dr0inv - (r0inv if v == 0 else 0.0)
        dab[k, o + 4 * _B] = w * dsfacdr * u


@numba.njit(cache=True, fastmath=_FASTMATH)
def _y_stage(utot, beta, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2, g):
    """g [n_u, 2*Y_LANES] = ∂(Σ_f beta[f] B_f)/∂(Re utot, Im utot) across the lanes.

    utot [n_u, 2*Y_LANES], beta [n_features, Y_LANES] (two batches side by side). One
    pass over the Clebsch–Gordan products, entry by entry: with ρ = 2wβ conj(U_ju)
    (known before the entry's Z), each product c U1 U2 adds to Z and scatters c ρ U2
    to g[u1] and c ρ U1 to g[u2]; then g[ju] += 2wβ Z.
    Three complex multiply-adds per product, the same products in the same order as
    the descriptor kernel's Z.
    """
    g[:, :] = 0.0
    z = np.empty(2 * _YL)
    rho = np.empty(2 * _YL)
    for e in range(entry_u.size):
        w = 2.0 * entry_w[e]
        ju = entry_u[e]
        b = entry_b[e]
        for p in range(_YL):
            wb = w * beta[b, p]
            rho[p] = wb * utot[ju, p]
            rho[_YL + p] = wb * utot[ju, _YL + p]
            z[p] = 0.0
            z[_YL + p] = 0.0
        for k in range(prod_ptr[e], prod_ptr[e + 1]):
            _product_adjoint(utot, prod_c[k], prod_u1[k], prod_u2[k], rho, z, g)
        for p in range(_YL):
            wb = w * beta[b, p]
            g[ju, p] += wb * z[p]
            g[ju, _YL + p] += wb * z[_YL + p]


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _product_adjoint(utot, c, a, b, rho, z, g):
    """One product c U_a U_b across the lanes: z += c U_a U_b, g[a] += c ρ conj(U_b)
    and g[b] += c ρ conj(U_a) (complex; ρ per lane)."""
    for p in range(_YL):
        q = _YL + p
        ar = utot[a, p]
        ai = utot[a, q]
        br = utot[b, p]
        bi = utot[b, q]
        z[p] += c * (ar * br - ai * bi)
        z[q] += c * (ar * bi + ai * br)
        cr = c * rho[p]
        ci = c * rho[q]
        g[a, p] += cr * br + ci * bi
        g[a, q] += ci * br - cr * bi
        g[b, p] += cr * ar + ci * ai
        g[b, q] += ci * ar - cr * ai


@numba.njit(cache=True, fastmath=_FASTMATH)
def _fold_mirrors(ytot, twojmax, ublock):
    """Add the gradient of the rows mb > j/2 (copies sign·conj of row j-mb) to their sources."""
    for j in range(1, twojmax + 1):
        for mb in range((j + 1) // 2):
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = ublock[j] + (j + 1) * mb + ma
                dst = ublock[j] + (j + 1) * (j - mb) + (j - ma)
                for l in range(_YL):
                    ytot[src, l] += sign * ytot[dst, l]
                    ytot[src, _YL + l] -= sign * ytot[dst, _YL + l]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _layer_offsets(twojmax):
    """Start row of each layer j in the stored U of one neighbour, and the total.

    Layer j keeps its rows mb <= j/2 and, for odd j, the mirror row (j+1)/2 that layer
    j+1 reads; row mb, column ma at ``offset[j] + (j+1)*mb + ma``.
    """
    offset = np.zeros(twojmax + 2, np.int64)
    for j in range(twojmax + 1):
        offset[j + 1] = offset[j] + (j + 1) * (j // 2 + 1 + j % 2)
    return offset


@numba.njit(cache=True, fastmath=_FASTMATH)
def _u_layers(ab, k, twojmax, rootpq, offset, ulay):
    """ulay = U of neighbour k, all layers (rows of ``_layer_offsets``), across the lanes."""
    for l in range(_B):
        ulay[0, l] = 1.0
        ulay[0, _B + l] = 0.0
    for j in range(1, twojmax + 1):
        for mb in range(j // 2 + 1):
            rp = offset[j - 1] + mb * j
            rc = offset[j] + mb * (j + 1)
            for ma in range(j + 1):
                r1 = rootpq[j - ma, j - mb] if ma < j else 0.0
                r2 = rootpq[ma, j - mb] if ma > 0 else 0.0
                ia = rp + min(ma, j - 1)
                ib = rp + max(ma - 1, 0)
                for l in range(_B):
                    ar = ab[k, l]
                    ai = ab[k, _B + l]
                    br = ab[k, 2 * _B + l]
                    bi = ab[k, 3 * _B + l]
                    pr = ulay[ia, l]
                    pi = ulay[ia, _B + l]
                    qr = ulay[ib, l]
                    qi = ulay[ib, _B + l]
                    ulay[rc + ma, l] = r1 * (ar * pr + ai * pi) - r2 * (br * qr + bi * qi)
                    ulay[rc + ma, _B + l] = r1 * (ar * pi - ai * pr) - r2 * (br * qi - bi * qr)
        if j % 2 == 1:
            _mirror_copy(ulay, offset[j], j)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _mirror_copy(x, base, j):
    """Odd j: row (j+1)/2 = sign·conj(row (j-1)/2) of the layer at row ``base`` of x."""
    mb = (j - 1) // 2
    for ma in range(j + 1):
        sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
        src = base + mb * (j + 1) + ma
        dst = base + (j - mb) * (j + 1) + (j - ma)
        for l in range(_B):
            x[dst, l] = sign * x[src, l]
            x[dst, _B + l] = -sign * x[src, _B + l]


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _mirror_fold(x, j):
    """Odd j: the transpose of :func:`_mirror_copy` on a gradient (row (j+1)/2 into (j-1)/2)."""
    mb = (j - 1) // 2
    for ma in range(j + 1):
        sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
        src = mb * (j + 1) + ma
        dst = (j - mb) * (j + 1) + (j - ma)
        for l in range(_B):
            x[src, l] += sign * x[dst, l]
            x[src, _B + l] -= sign * x[dst, _B + l]


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _load_adjoint(adj, ytot, j, ublock):
    """adj = the rows mb <= j/2 of ytot's layer j; the mirror row (odd j) zero."""
    for row in range(j // 2 + 1 + j % 2):
        for ma in range(j + 1):
            i = row * (j + 1) + ma
            for l in range(2 * _B):
                adj[i, l] = ytot[ublock[j] + i, l] if row <= j // 2 else 0.0


@numba.njit(cache=True, fastmath=_FASTMATH)
def _du_stage(ytot, ab, k, twojmax, ublock, rootpq, offset, ulay, adj, adj_prev, acc):
    """acc [5, BATCH] = ∂(ytot·U_k)/∂(a_r, a_i, b_r, b_i) and ytot·U_k for neighbour k.

    Reverse mode through the U recursion: U_k forward (all layers kept in ulay), then
    the gradient layer by layer from j = twojmax down. Element ma of a row is
    v = r1 conj(a) P_ma - r2 conj(b) P_(ma-1) (P: the row of layer j-1), so each P_m
    of the previous layer receives from elements m (r1) and m+1 (r2): gathered per
    P_m, one pass over the previous layer (:func:`_du_element`, inlined: a call per
    element cost more than its arithmetic). ytot·U_k is summed in the same pass (each
    P_m's adjoint starts as its ytot entry), the top layer before it.
    """
    _u_layers(ab, k, twojmax, rootpq, offset, ulay)
    _load_adjoint(adj, ytot, twojmax, ublock)
    for l in range(_B):
        acc[0, l] = 0.0
        acc[1, l] = 0.0
        acc[2, l] = 0.0
        acc[3, l] = 0.0
        acc[4, l] = 0.0
    top = offset[twojmax]
    for i in range((twojmax // 2 + 1) * (twojmax + 1)):
        for l in range(_B):
            acc[4, l] += adj[i, l] * ulay[top + i, l] + adj[i, _B + l] * ulay[top + i, _B + l]
    for j in range(twojmax, 0, -1):
        if j % 2 == 1:
            _mirror_fold(adj, j)
        _load_adjoint(adj_prev, ytot, j - 1, ublock)
        for mb in range(j // 2 + 1):
            for m in range(j):
                _du_element(ab, k, rootpq[j - m, j - mb], rootpq[m + 1, j - mb],
                            mb * (j + 1) + m, offset[j - 1] + mb * j + m, mb * j + m,
                            ulay, adj, adj_prev, acc)
        adj, adj_prev = adj_prev, adj


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _du_element(ab, k, r1, r2, ic, ip, im, ulay, adj, adj_prev, acc):
    """Gradient through P_m (ulay row ip, adjoint row im of the previous layer), which
    enters element m as r1 conj(a) P_m (gradient adj[ic]) and element m+1 as
    -r2 conj(b) P_m (gradient adj[ic + 1]): to a, b (acc[0:4]) and to P_m; acc[4] +=
    ytot·P_m (adj_prev[im] before the update, see :func:`_du_stage`)."""
    for l in range(_B):
        ar = ab[k, l]
        ai = ab[k, _B + l]
        br = ab[k, 2 * _B + l]
        bi = ab[k, 3 * _B + l]
        pr = ulay[ip, l]
        pi = ulay[ip, _B + l]
        gr = r1 * adj[ic, l]
        gi = r1 * adj[ic, _B + l]
        hr = r2 * adj[ic + 1, l]
        hi = r2 * adj[ic + 1, _B + l]
        acc[0, l] += gr * pr + gi * pi
        acc[1, l] += gr * pi - gi * pr
        acc[2, l] -= hr * pr + hi * pi
        acc[3, l] -= hr * pi - hi * pr
        yr = adj_prev[im, l]
        yi = adj_prev[im, _B + l]
        acc[4, l] += yr * pr + yi * pi
        adj_prev[im, l] = yr + ((gr * ar - gi * ai) - (hr * br - hi * bi))
        adj_prev[im, _B + l] = yi + ((gr * ai + gi * ar) - (hr * bi + hi * br))


@numba.njit(cache=True, fastmath=_FASTMATH)
def _batch_forces(p0, npts, ab, dab, img, ytot, twojmax, ublock, rootpq, force_iv):
    """Add ∂E/∂d of every neighbour of the batch to force_iv [images, 3] ((β units)/Å)."""
    offset = _layer_offsets(twojmax)
    rows = (twojmax // 2 + 2) * (twojmax + 1)
    ulay = np.empty((offset[twojmax + 1], 2 * _B))
    adj = np.empty((rows, 2 * _B))
    adj_prev = np.empty((rows, 2 * _B))
    acc = np.empty((5, _B))
    for k in range(ab.shape[0]):
        _du_stage(ytot, ab, k, twojmax, ublock, rootpq, offset, ulay, adj, adj_prev, acc)
        for p in range(min(_B, npts - p0)):
            i = img[k, p]
            if i < 0:
                continue
            s = ab[k, 4 * _B + p]
            for v in range(3):
                o = 5 * v * _B + p
                force_iv[i, v] += (s * (acc[0, p] * dab[k, o] + acc[1, p] * dab[k, o + _B]
                                        + acc[2, p] * dab[k, o + 2 * _B]
                                        + acc[3, p] * dab[k, o + 3 * _B])
                                   + dab[k, o + 4 * _B] * acc[4, p])


@numba.njit(cache=True, fastmath=_FASTMATH)
def _batch_u(p0, npts, start, shape, grid_n, cell, img_pos, img_sp, img_rc, img_ids, rc_s,
             w_s, rfac0, rmin0, switchflag, halo, reg_lo, bin_w, nbins, bin_ptr, twojmax,
             ublock, rootpq, pos, fmin, fmax, utot):
    """Stages 1-2 of the batch at point p0: its neighbours (ab, dab, img) and utot."""
    _batch_positions(p0, npts, start, shape, grid_n, cell, pos, fmin, fmax)
    # candidates by image index: "species" = image id, "cutoff" = the image's own
    cand, cand_img = _candidates(fmin, fmax, halo, reg_lo, bin_w, nbins, bin_ptr,
                                 img_pos, img_ids, img_rc)
    ab, dab, img = _neighbours_d(pos, cand, cand_img, img_sp, rc_s, w_s, rfac0, rmin0,
                                 switchflag)
    _u_stage(utot, ab, twojmax, ublock, rootpq)
    return ab, dab, img


@numba.njit(cache=True, fastmath=_FASTMATH)
def _to_lanes(x, x2, h):
    """Lanes h..h+BATCH of x2 [rows, 2*Y_LANES] = x [rows, 2*BATCH] (real, imaginary)."""
    for i in range(x.shape[0]):
        for l in range(_B):
            x2[i, h + l] = x[i, l]
            x2[i, _YL + h + l] = x[i, _B + l]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _from_lanes(x2, x, h):
    """x [rows, 2*BATCH] = lanes h..h+BATCH of x2 [rows, 2*Y_LANES]."""
    for i in range(x.shape[0]):
        for l in range(_B):
            x[i, l] = x2[i, h + l]
            x[i, _B + l] = x2[i, _YL + h + l]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def adjoint_points(start, shape, grid_n, cell, img_pos, img_sp, img_rc, rc_s, w_s,
                   rfac0, rmin0, switchflag, halo, reg_lo, bin_w, nbins, bin_ptr,
                   twojmax, ublock, rootpq, entry_u, entry_w, entry_b,
                   prod_ptr, prod_c, prod_u1, prod_u2, beta, nchunks):
    """Forces ``[nchunks, images, 3]`` = Σ_p Σ_f beta[p, f] ∂B_pf/∂d per image and chunk.

    Arguments as ``_native_kernel.bispectrum_points`` (img_pos: images sorted by
    cell-list bin, Å; img_sp: their species), plus img_rc (each image's cutoff, Å),
    beta [n_points, n_features] (per-point coefficients, C order of the block) and the
    number of chunks (contiguous batch ranges, one accumulator each). Sum over chunks:
    F_image = -∂E/∂R_image in (units of beta)/Å.
    """
    npts = shape[0] * shape[1] * shape[2]
    n_u = ublock[twojmax + 1]
    nfeat = beta.shape[1]
    nimg = img_pos.shape[0]
    nbatch = (npts + _B - 1) // _B
    force_tiv = np.zeros((nchunks, nimg, 3))
    img_ids = np.arange(nimg)
    for t in numba.prange(nchunks):
        utot = np.empty((n_u, 2 * _B))
        ytot = np.empty((n_u, 2 * _B))
        utot2 = np.zeros((n_u, 2 * _YL))
        ytot2 = np.empty((n_u, 2 * _YL))
        beta2 = np.empty((nfeat, _YL))
        pos = np.empty((_B, 3))
        fmin = np.empty(3)
        fmax = np.empty(3)
        last = (t + 1) * nbatch // nchunks
        for pair in range(t * nbatch // nchunks, last, 2):
            p0 = pair * _B
            two = pair + 1 < last      # the pair's second batch (else its lanes: β = 0)
            ab0, dab0, img0 = _batch_u(p0, npts, start, shape, grid_n, cell, img_pos, img_sp,
                                       img_rc, img_ids, rc_s, w_s, rfac0, rmin0, switchflag,
                                       halo, reg_lo, bin_w, nbins, bin_ptr, twojmax, ublock,
                                       rootpq, pos, fmin, fmax, utot)
            _to_lanes(utot, utot2, 0)
            ab1, dab1, img1 = ab0, dab0, img0
            if two:
                ab1, dab1, img1 = _batch_u(p0 + _B, npts, start, shape, grid_n, cell, img_pos,
                                           img_sp, img_rc, img_ids, rc_s, w_s, rfac0, rmin0,
                                           switchflag, halo, reg_lo, bin_w, nbins, bin_ptr,
                                           twojmax, ublock, rootpq, pos, fmin, fmax, utot)
                _to_lanes(utot, utot2, _B)
            for p in range(_YL):
                for f in range(nfeat):
                    beta2[f, p] = beta[p0 + p, f] if p0 + p < npts and (two or p < _B) else 0.0
            _y_stage(utot2, beta2, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1,
                     prod_u2, ytot2)
            _fold_mirrors(ytot2, twojmax, ublock)
            _from_lanes(ytot2, ytot, 0)
            _batch_forces(p0, npts, ab0, dab0, img0, ytot, twojmax, ublock, rootpq,
                          force_tiv[t])
            if two:
                _from_lanes(ytot2, ytot, _B)
                _batch_forces(p0 + _B, npts, ab1, dab1, img1, ytot, twojmax, ublock, rootpq,
                              force_tiv[t])
    return force_tiv
