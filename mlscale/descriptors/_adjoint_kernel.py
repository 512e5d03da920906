"""numba kernel of the bispectrum adjoint: forces Σ_p Σ_f β_pf ∂B_pf/∂d on every atom image.

The same batches of ``BATCH`` grid points as the descriptor kernel (``_native_kernel``),
whose position, candidate and U stages it reuses unchanged. Per batch:

1. neighbours as the descriptor kernel, plus ∂(a, b, s)/∂d per Cartesian axis, where
   d = point - atom (Å) is the displacement, (a, b) its Cayley–Klein parameters and s
   the species weight times the switching function, and the image each lane refers to;
2. U stage: utot, exactly as the descriptor kernel computes it;
3. Y stage, on ``ZB_LANES`` points at a time: reverse mode of the Z/B stage, ytot =
   ∂(Σ_f β_f B_f)/∂utot (real and imaginary parts taken as independent variables), in
   one pass over the Clebsch–Gordan products (each product adds to Z, needed for the
   ∂/∂U_j term, and to the gradients of its two U factors); then the gradient of the
   mirrored rows (mb > j/2) folded into the rows they are copied from;
4. dU stage: per neighbour, U and ∂U/∂d (three axes) by the same layer recursion as
   the U stage, contracted at once with ytot: ∂E/∂d = s ytot·∂U/∂d + (∂s/∂d) ytot·U.

The force on an image is F = -∂E/∂R = +∂E/∂d (R enters through d = x - R). Batches are
split into one contiguous range per chunk, each chunk with its own accumulator row (no
races); the caller sums the chunks and the images of each atom. ∂B/∂R is never stored.
Lane layout as in ``_native_kernel``: real parts in columns ``0:n``, imaginary in ``n:2n``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._native_kernel import BATCH, ZB_LANES, _batch_positions, _candidates, _u_stage

_FASTMATH = {"contract"}    # allow FMA; no reassociation
_B = BATCH
_Z = ZB_LANES


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
    """g [n_u, 2*ZB_LANES] = ∂(Σ_f beta[f] B_f)/∂(Re utot, Im utot) across the lanes.

    beta [n_features, ZB_LANES]. Per entry, B += 2w (Re U_j Re Z + Im U_j Im Z) and
    Z = Σ c U1 U2: the gradient of U_j is 2wβ Z, that of Z is gz = 2wβ U_j, which each
    product c U1 U2 passes on to U1 (c gz conj(U2)-ish) and U2 in the same pass.
    """
    z = np.empty(2 * _Z)
    gz = np.empty(2 * _Z)
    g[:, :] = 0.0
    for e in range(entry_u.size):
        w = 2.0 * entry_w[e]
        ju = entry_u[e]
        b = entry_b[e]
        for p in range(_Z):
            gz[p] = w * beta[b, p] * utot[ju, p]
            gz[_Z + p] = w * beta[b, p] * utot[ju, _Z + p]
            z[p] = 0.0
            z[_Z + p] = 0.0
        for k in range(prod_ptr[e], prod_ptr[e + 1]):
            c, a, bb = prod_c[k], prod_u1[k], prod_u2[k]
            for p in range(_Z):
                q = _Z + p
                ar = utot[a, p]
                ai = utot[a, q]
                br = utot[bb, p]
                bi = utot[bb, q]
                gr = c * gz[p]
                gi = c * gz[q]
                z[p] += c * (ar * br - ai * bi)
                z[q] += c * (ar * bi + ai * br)
                g[a, p] += gr * br + gi * bi
                g[a, q] += gi * br - gr * bi
                g[bb, p] += gr * ar + gi * ai
                g[bb, q] += gi * ar - gr * ai
        for p in range(_Z):
            g[ju, p] += w * beta[b, p] * z[p]
            g[ju, _Z + p] += w * beta[b, p] * z[_Z + p]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _fold_mirrors(ytot, twojmax, ublock):
    """Add the gradient of the rows mb > j/2 (copies sign·conj of row j-mb) to their sources."""
    for j in range(1, twojmax + 1):
        for mb in range((j + 1) // 2):
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = ublock[j] + (j + 1) * mb + ma
                dst = ublock[j] + (j + 1) * (j - mb) + (j - ma)
                for l in range(_B):
                    ytot[src, l] += sign * ytot[dst, l]
                    ytot[src, _B + l] -= sign * ytot[dst, _B + l]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _du_stage(ytot, ab, dab, k, twojmax, ublock, rootpq, prev, cur, dprev, dcur, acc):
    """acc [4, BATCH] = (ytot·∂U/∂d_x, ∂d_y, ∂d_z, ytot·U) of neighbour k, rows mb <= j/2.

    prev/cur [rows, 2*BATCH], dprev/dcur [3, rows, 2*BATCH]: layer work arrays.
    """
    for l in range(_B):
        prev[0, l] = 1.0
        prev[0, _B + l] = 0.0
        acc[0, l] = 0.0
        acc[1, l] = 0.0
        acc[2, l] = 0.0
        acc[3, l] = ytot[0, l]
    for v in range(3):
        dprev[v, 0, :] = 0.0
    for j in range(1, twojmax + 1):
        for mb in range(j // 2 + 1):
            rp = mb * j
            rc = mb * (j + 1)
            out = ublock[j] + rc
            for ma in range(j + 1):
                r1 = rootpq[j - ma, j - mb] if ma < j else 0.0
                r2 = rootpq[ma, j - mb] if ma > 0 else 0.0
                ia = rp + min(ma, j - 1)
                ib = rp + max(ma - 1, 0)
                _du_element(ytot, ab, dab, k, r1, r2, ia, ib, rc + ma, out + ma,
                            prev, cur, dprev, dcur, acc)
        if j % 2 == 1:
            mb = (j - 1) // 2
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = mb * (j + 1) + ma
                dst = (j - mb) * (j + 1) + (j - ma)
                for l in range(_B):
                    cur[dst, l] = sign * cur[src, l]
                    cur[dst, _B + l] = -sign * cur[src, _B + l]
                for v in range(3):
                    for l in range(_B):
                        dcur[v, dst, l] = sign * dcur[v, src, l]
                        dcur[v, dst, _B + l] = -sign * dcur[v, src, _B + l]
        prev, cur = cur, prev
        dprev, dcur = dcur, dprev


@numba.njit(cache=True, fastmath=_FASTMATH)
def _du_element(ytot, ab, dab, k, r1, r2, ia, ib, ic, iu, prev, cur, dprev, dcur, acc):
    """One element U_j[mb][ma] = r1 conj(a) P - r2 conj(b) Q and its three derivatives."""
    for l in range(_B):
        ar = ab[k, l]
        ai = ab[k, _B + l]
        br = ab[k, 2 * _B + l]
        bi = ab[k, 3 * _B + l]
        pr = prev[ia, l]
        pi = prev[ia, _B + l]
        qr = prev[ib, l]
        qi = prev[ib, _B + l]
        vr = r1 * (ar * pr + ai * pi) - r2 * (br * qr + bi * qi)
        vi = r1 * (ar * pi - ai * pr) - r2 * (br * qi - bi * qr)
        cur[ic, l] = vr
        cur[ic, _B + l] = vi
        yr = ytot[iu, l]
        yi = ytot[iu, _B + l]
        acc[3, l] += yr * vr + yi * vi
        for v in range(3):
            o = 5 * v * _B + l
            dar = dab[k, o]
            dai = dab[k, o + _B]
            dbr = dab[k, o + 2 * _B]
            dbi = dab[k, o + 3 * _B]
            dpr = dprev[v, ia, l]
            dpi = dprev[v, ia, _B + l]
            dqr = dprev[v, ib, l]
            dqi = dprev[v, ib, _B + l]
            dvr = (r1 * (dar * pr + dai * pi + ar * dpr + ai * dpi)
                   - r2 * (dbr * qr + dbi * qi + br * dqr + bi * dqi))
            dvi = (r1 * (dar * pi - dai * pr + ar * dpi - ai * dpr)
                   - r2 * (dbr * qi - dbi * qr + br * dqi - bi * dqr))
            dcur[v, ic, l] = dvr
            dcur[v, ic, _B + l] = dvi
            acc[v, l] += yr * dvr + yi * dvi


@numba.njit(cache=True, fastmath=_FASTMATH)
def _batch_forces(p0, npts, ab, dab, img, ytot, twojmax, ublock, rootpq, force_iv):
    """Add ∂E/∂d of every neighbour of the batch to force_iv [images, 3] (eV-ish/Å)."""
    rows = (twojmax // 2 + 2) * (twojmax + 1)
    prev = np.empty((rows, 2 * _B))
    cur = np.empty((rows, 2 * _B))
    dprev = np.empty((3, rows, 2 * _B))
    dcur = np.empty((3, rows, 2 * _B))
    acc = np.empty((4, _B))
    for k in range(ab.shape[0]):
        _du_stage(ytot, ab, dab, k, twojmax, ublock, rootpq, prev, cur, dprev, dcur, acc)
        for p in range(min(_B, npts - p0)):
            i = img[k, p]
            if i < 0:
                continue
            s = ab[k, 4 * _B + p]
            for v in range(3):
                force_iv[i, v] += s * acc[v, p] + dab[k, (5 * v + 4) * _B + p] * acc[3, p]


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
        half = np.empty((n_u, 2 * _Z))
        g = np.empty((n_u, 2 * _Z))
        beta_h = np.empty((nfeat, _Z))
        pos = np.empty((_B, 3))
        fmin = np.empty(3)
        fmax = np.empty(3)
        for batch in range(t * nbatch // nchunks, (t + 1) * nbatch // nchunks):
            p0 = batch * _B
            _batch_positions(p0, npts, start, shape, grid_n, cell, pos, fmin, fmax)
            # candidates by image index: "species" = image id, "cutoff" = the image's own
            cand, cand_img = _candidates(fmin, fmax, halo, reg_lo, bin_w, nbins, bin_ptr,
                                         img_pos, img_ids, img_rc)
            ab, dab, img = _neighbours_d(pos, cand, cand_img, img_sp, rc_s, w_s, rfac0,
                                         rmin0, switchflag)
            _u_stage(utot, ab, twojmax, ublock, rootpq)
            for h in range(0, _B, _Z):
                half[:, :_Z] = utot[:, h:h + _Z]
                half[:, _Z:] = utot[:, _B + h:_B + h + _Z]
                for p in range(_Z):
                    for f in range(nfeat):
                        beta_h[f, p] = beta[p0 + h + p, f] if p0 + h + p < npts else 0.0
                _y_stage(half, beta_h, entry_u, entry_w, entry_b, prod_ptr, prod_c,
                         prod_u1, prod_u2, g)
                ytot[:, h:h + _Z] = g[:, :_Z]
                ytot[:, _B + h:_B + h + _Z] = g[:, _Z:]
            _fold_mirrors(ytot, twojmax, ublock)
            _batch_forces(p0, npts, ab, dab, img, ytot, twojmax, ublock, rootpq,
                          force_tiv[t])
    return force_tiv
