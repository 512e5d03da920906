"""numba kernel of the native bispectrum: grid points in batches, SIMD lanes over points.

One batch is ``BATCH`` consecutive points of the block (C order); ``prange`` runs the
batches in parallel. Per batch:

1. candidate atoms from the cell-list bins around the batch's fractional bounding
   box, then each point's neighbours (``1e-20 < r² < rc²``);
2. U stage: lane p holds the k-th neighbour of point p (a zero-weight dummy beyond
   its count); the Wigner-U recursion runs layer by layer across the lanes, and each
   element, times switching function and species weight, is added to ``utot`` as
   soon as it is computed. Only the rows mb <= j/2 are computed (plus the one mirror
   row the next layer needs); the other rows of ``utot`` follow from
   U_j[j-mb][j-ma] = (-1)^(ma+mb) conj(U_j[mb][ma]) once per batch;
3. Z/B stage, on ``ZB_LANES`` points at a time: every Z entry needed by B is
   accumulated over its Clebsch–Gordan products across the lanes (four products per
   pass) and contracted at once with conj(U_j) into B; Z is never stored.

Arrays of n complex lanes keep the real parts in columns ``0:n`` and the imaginary
parts in ``n:2n``. The lane loops run over compile-time constant lengths with plain
``range`` indices, which is what LLVM needs to vectorise them (numba leaves LLVM's
SLP vectoriser off). The lane counts are measured choices: more U lanes amortise
LLVM's run-time alias checks per loop; the Z/B stage, bound by L2 bandwidth, is
fastest at 32. All arithmetic in float64; lengths in Å.
"""

from __future__ import annotations

import math

import numba
import numpy as np

BATCH = 64                  # grid points per batch = SIMD lanes of the U stage
ZB_LANES = 32               # lanes per Z/B pass (keeps its utot slice in L2)
_FASTMATH = {"contract"}    # allow FMA; no reassociation
_B = BATCH
_Z = ZB_LANES


@numba.njit(cache=True, fastmath=_FASTMATH)
def _batch_positions(p0, npts, start, shape, grid_n, cell, pos, fmin, fmax):
    """Cartesian positions (Å) of the batch's points; their fractional bounding box.

    Points past the block's end repeat its last point (their results are dropped).
    """
    fmin[:] = np.inf
    fmax[:] = -np.inf
    for p in range(_B):
        q = min(p0 + p, npts - 1)
        k = q % shape[2]
        rest = q // shape[2]
        f0 = (start[0] + rest // shape[1]) / grid_n[0]
        f1 = (start[1] + rest % shape[1]) / grid_n[1]
        f2 = (start[2] + k) / grid_n[2]
        for a in range(3):
            pos[p, a] = f0 * cell[0, a] + f1 * cell[1, a] + f2 * cell[2, a]
        fmin[0] = min(fmin[0], f0)
        fmin[1] = min(fmin[1], f1)
        fmin[2] = min(fmin[2], f2)
        fmax[0] = max(fmax[0], f0)
        fmax[1] = max(fmax[1], f1)
        fmax[2] = max(fmax[2], f2)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _candidates(fmin, fmax, halo, reg_lo, bin_w, nbins, bin_ptr, atom_pos, atom_sp, rc_s):
    """Atoms in the cell-list bins that overlap [fmin - halo, fmax + halo].

    Returns their coordinates ``[4, n]`` (x, y, z, rc²) and species.
    """
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        lo[a] = max(0, int(math.floor((fmin[a] - halo[a] - reg_lo[a]) / bin_w[a])))
        hi[a] = min(nbins[a] - 1, int(math.floor((fmax[a] + halo[a] - reg_lo[a]) / bin_w[a])))
    count = 0
    if hi[2] >= lo[2]:
        for bx in range(lo[0], hi[0] + 1):
            for by in range(lo[1], hi[1] + 1):
                first = (bx * nbins[1] + by) * nbins[2]
                count += bin_ptr[first + hi[2] + 1] - bin_ptr[first + lo[2]]
    cand = np.empty((4, count))
    sp = np.empty(count, np.int64)
    n = 0
    if hi[2] >= lo[2]:
        for bx in range(lo[0], hi[0] + 1):
            for by in range(lo[1], hi[1] + 1):
                first = (bx * nbins[1] + by) * nbins[2]
                for a in range(bin_ptr[first + lo[2]], bin_ptr[first + hi[2] + 1]):
                    cand[0, n] = atom_pos[a, 0]
                    cand[1, n] = atom_pos[a, 1]
                    cand[2, n] = atom_pos[a, 2]
                    cand[3, n] = rc_s[atom_sp[a]] ** 2
                    sp[n] = atom_sp[a]
                    n += 1
    return cand, sp


@numba.njit(cache=True, fastmath=_FASTMATH)
def _neighbours(pos, cand, cand_sp, rc_s, w_s, rfac0, rmin0, switchflag):
    """Neighbour parameters ``ab [kmax, 5*BATCH]``: lane blocks a_r, a_i, b_r, b_i, s.

    (a, b) are the Cayley–Klein parameters of the displacement point - atom, s the
    species weight times the switching function; dummies have a = 1, b = 0, s = 0.
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
        for c in range(ncand):
            if 1e-20 < rsq[p, c] < cand[3, c]:
                count += 1
        kmax = max(kmax, count)
    ab = np.zeros((kmax, 5 * _B))
    ab[:, :_B] = 1.0
    for p in range(_B):
        k = 0
        for c in range(ncand):
            if not 1e-20 < rsq[p, c] < cand[3, c]:
                continue
            dx = pos[p, 0] - cand[0, c]
            dy = pos[p, 1] - cand[1, c]
            dz = pos[p, 2] - cand[2, c]
            rc = rc_s[cand_sp[c]]
            r = math.sqrt(rsq[p, c])
            theta0 = (r - rmin0) * rfac0 * math.pi / (rc - rmin0)
            z0 = r / math.tan(theta0)
            r0inv = 1.0 / math.sqrt(rsq[p, c] + z0 * z0)
            sfac = 1.0
            if switchflag and r > rmin0:
                sfac = 0.5 * (math.cos((r - rmin0) * math.pi / (rc - rmin0)) + 1.0)
            ab[k, p] = r0inv * z0
            ab[k, _B + p] = -r0inv * dz
            ab[k, 2 * _B + p] = r0inv * dy
            ab[k, 3 * _B + p] = -r0inv * dx
            ab[k, 4 * _B + p] = sfac * w_s[cand_sp[c]]
            k += 1
    return ab


@numba.njit(cache=True, fastmath=_FASTMATH)
def _u_stage(utot, ab, twojmax, ublock, rootpq):
    """utot [n_u, 2*BATCH] = self term + Σ_neighbours s·U (all rows, see module doc)."""
    utot[:, :] = 0.0
    for j in range(twojmax + 1):
        for m in range(j + 1):
            utot[ublock[j] + (j + 1) * m + m, :_B] = 1.0       # self term, weight 1
    width = twojmax + 1
    prev = np.empty(((twojmax // 2 + 2) * width, 2 * _B))     # layer j-1, rows 0..j/2
    cur = np.empty(((twojmax // 2 + 2) * width, 2 * _B))      # layer j
    for k in range(ab.shape[0]):
        for l in range(_B):
            prev[0, l] = 1.0
            prev[0, _B + l] = 0.0
            utot[0, l] += ab[k, 4 * _B + l]
        for j in range(1, twojmax + 1):
            for mb in range(j // 2 + 1):
                rp = mb * j            # row mb of layer j-1 (row length j)
                rc = mb * (j + 1)      # row mb of layer j (row length j+1)
                out = ublock[j] + rc
                for ma in range(j + 1):
                    # U_j[mb][ma] = r1 conj(a) U_{j-1}[mb][ma] - r2 conj(b) U_{j-1}[mb][ma-1]
                    r1 = rootpq[j - ma, j - mb] if ma < j else 0.0
                    r2 = rootpq[ma, j - mb] if ma > 0 else 0.0
                    ia = rp + min(ma, j - 1)
                    ib = rp + max(ma - 1, 0)
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
                        cur[rc + ma, l] = vr
                        cur[rc + ma, _B + l] = vi
                        s = ab[k, 4 * _B + l]
                        utot[out + ma, l] += s * vr
                        utot[out + ma, _B + l] += s * vi
            if j % 2 == 1:   # the next layer also needs row (j+1)/2 = mirror of row (j-1)/2
                mb = (j - 1) // 2
                for ma in range(j + 1):
                    sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                    src = mb * (j + 1) + ma
                    dst = (j - mb) * (j + 1) + (j - ma)
                    for l in range(_B):
                        cur[dst, l] = sign * cur[src, l]
                        cur[dst, _B + l] = -sign * cur[src, _B + l]
            prev, cur = cur, prev
    for j in range(1, twojmax + 1):
        for mb in range((j + 1) // 2):
            for ma in range(j + 1):
                sign = 1.0 if (ma + mb) % 2 == 0 else -1.0
                src = ublock[j] + (j + 1) * mb + ma
                dst = ublock[j] + (j + 1) * (j - mb) + (j - ma)
                for l in range(_B):
                    utot[dst, l] = sign * utot[src, l]
                    utot[dst, _B + l] = -sign * utot[src, _B + l]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _zb_stage(utot, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2, b_out):
    """b_out [n_features, ZB_LANES] = Σ_entries 2 w Re[conj(U_j) Z] across the lanes."""
    z = np.empty(2 * _Z)
    b_out[:, :] = 0.0
    for e in range(entry_u.size):
        z[:] = 0.0
        k = prod_ptr[e]
        end = prod_ptr[e + 1]
        while k + 4 <= end:
            c0, c1, c2, c3 = prod_c[k], prod_c[k + 1], prod_c[k + 2], prod_c[k + 3]
            a0, a1, a2, a3 = prod_u1[k], prod_u1[k + 1], prod_u1[k + 2], prod_u1[k + 3]
            b0, b1, b2, b3 = prod_u2[k], prod_u2[k + 1], prod_u2[k + 2], prod_u2[k + 3]
            for p in range(_Z):
                q = _Z + p
                zr = c0 * (utot[a0, p] * utot[b0, p] - utot[a0, q] * utot[b0, q])
                zi = c0 * (utot[a0, p] * utot[b0, q] + utot[a0, q] * utot[b0, p])
                zr += c1 * (utot[a1, p] * utot[b1, p] - utot[a1, q] * utot[b1, q])
                zi += c1 * (utot[a1, p] * utot[b1, q] + utot[a1, q] * utot[b1, p])
                zr += c2 * (utot[a2, p] * utot[b2, p] - utot[a2, q] * utot[b2, q])
                zi += c2 * (utot[a2, p] * utot[b2, q] + utot[a2, q] * utot[b2, p])
                zr += c3 * (utot[a3, p] * utot[b3, p] - utot[a3, q] * utot[b3, q])
                zi += c3 * (utot[a3, p] * utot[b3, q] + utot[a3, q] * utot[b3, p])
                z[p] += zr
                z[q] += zi
            k += 4
        while k < end:
            c0, a0, b0 = prod_c[k], prod_u1[k], prod_u2[k]
            for p in range(_Z):
                q = _Z + p
                z[p] += c0 * (utot[a0, p] * utot[b0, p] - utot[a0, q] * utot[b0, q])
                z[q] += c0 * (utot[a0, p] * utot[b0, q] + utot[a0, q] * utot[b0, p])
            k += 1
        w = 2.0 * entry_w[e]
        ju = entry_u[e]
        b = entry_b[e]
        for p in range(_Z):
            b_out[b, p] += w * (utot[ju, p] * z[p] + utot[ju, _Z + p] * z[_Z + p])


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def bispectrum_points(start, shape, grid_n, cell, atom_pos, atom_sp, rc_s, w_s,
                      rfac0, rmin0, switchflag, halo, reg_lo, bin_w, nbins, bin_ptr,
                      twojmax, ublock, rootpq, entry_u, entry_w, entry_b,
                      prod_ptr, prod_c, prod_u1, prod_u2, out):
    """Bispectrum of every point of a block into ``out [n_points, n_features]``.

    start, shape: the block in global grid indices; grid_n: global grid shape;
    cell: cell vectors (rows, Å). Atoms (with periodic images, sorted by cell-list
    bin): atom_pos (Å), atom_sp (species index); per species the cutoff rc_s (Å)
    and weight w_s. Cell list: fractional region origin reg_lo, bin widths bin_w,
    bin counts nbins, CSR pointers bin_ptr; halo: cutoff in fractional units per axis.
    """
    npts = shape[0] * shape[1] * shape[2]
    n_u = ublock[twojmax + 1]
    nfeat = out.shape[1]
    for batch in numba.prange((npts + _B - 1) // _B):
        p0 = batch * _B
        pos = np.empty((_B, 3))
        fmin = np.empty(3)
        fmax = np.empty(3)
        _batch_positions(p0, npts, start, shape, grid_n, cell, pos, fmin, fmax)
        cand, cand_sp = _candidates(fmin, fmax, halo, reg_lo, bin_w, nbins, bin_ptr,
                                    atom_pos, atom_sp, rc_s)
        ab = _neighbours(pos, cand, cand_sp, rc_s, w_s, rfac0, rmin0, switchflag)
        utot = np.empty((n_u, 2 * _B))
        _u_stage(utot, ab, twojmax, ublock, rootpq)
        half = np.empty((n_u, 2 * _Z))
        b_out = np.empty((nfeat, _Z))
        for h in range(0, _B, _Z):
            half[:, :_Z] = utot[:, h:h + _Z]
            half[:, _Z:] = utot[:, _B + h:_B + h + _Z]
            _zb_stage(half, entry_u, entry_w, entry_b, prod_ptr, prod_c, prod_u1, prod_u2,
                      b_out)
            for p in range(min(_Z, npts - p0 - h)):
                for b in range(nfeat):
                    out[p0 + h + p, b] = b_out[b, p]
