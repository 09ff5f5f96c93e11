"""Model grids: axis-aligned RAS grids (voxel -> world mm) onto which scans are sampled.

The networks work on grids whose voxel axes are the world's RAS axes (axis 0 = +x = subject's
left-to-right), at the network's voxel size. Sampling a scan onto such a grid and pasting results
back are single affine resamplings (no intermediate full-size volumes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (voxels) and ``affine`` (voxel index -> RAS world mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> np.ndarray:
        """Voxel size (mm) along each voxel axis."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def world(self, ijk: np.ndarray) -> np.ndarray:
        """World coordinates (mm) of voxel coordinates ``ijk`` (..., 3)."""
        from ..io import voxel_to_world

        ijk = np.asarray(ijk, float)
        return voxel_to_world(self.affine, ijk.reshape(-1, 3)).reshape(ijk.shape)

    def voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Voxel coordinates (float) of world points ``xyz`` (..., 3) in mm."""
        from ..io import world_to_voxel

        xyz = np.asarray(xyz, float)
        return world_to_voxel(self.affine, xyz.reshape(-1, 3)).reshape(xyz.shape)

    def corners_world(self) -> np.ndarray:
        """World coordinates of the 8 corner voxel centres, (8, 3)."""
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij"))
        return self.world(corners.reshape(3, -1).T)


def round_up(n: int, divisor: int) -> int:
    """Smallest multiple of ``divisor`` >= n."""
    return int(-(-int(n) // divisor) * divisor)


def rotation(degrees: float, axis: int) -> np.ndarray:
    """3x3 rotation by ``degrees`` about world axis ``axis`` (0 = x, left-right; 1 = y; 2 = z)."""
    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def frame(grid: Grid) -> np.ndarray:
    """The rotation (3x3, columns = unit axes in world) nearest to ``grid``'s voxel axes taken
    in R, A, S order: the identity for a straight scan stored in any axis order, the tilt of an
    oblique one."""
    from ..io import ras_axes

    axes = grid.affine[:3, :3] / grid.voxel_mm
    perm, flip = ras_axes(grid.affine)  # voxel axes in R, A, S order (any stored order)
    axes = axes[:, list(perm)] * np.where(flip, -1.0, 1.0)
    u, _, vt = np.linalg.svd(axes)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:  # a left-handed scan: keep the nearest proper frame
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    return np.eye(3) if np.allclose(rotation, np.eye(3), atol=1e-9) else rotation


def ras_grid(centre_world: np.ndarray, voxel_mm: float, shape: tuple[int, int, int],
             snap_to: Grid | None = None) -> Grid:
    """A grid of ``shape`` voxels of ``voxel_mm`` centred on ``centre_world``, its axes along
    R, A, S.

    With ``snap_to`` (the scan's grid, voxel axes in RAS order), the axes follow the scan's own
    (``frame``: RAS for a straight scan, tilted with an oblique one) and the centre is moved by
    less than one scan voxel so that model voxels fall on scan voxel centres whenever the voxel
    sizes match: sampling is then an exact copy, without interpolation blur, and the same voxels
    written with an oblique affine give the same crop (issue 12).
    """
    shape = tuple(int(n) for n in shape)
    rotation = np.eye(3) if snap_to is None else frame(snap_to)
    affine = np.eye(4)
    affine[:3, :3] = rotation * voxel_mm
    affine[:3, 3] = np.asarray(centre_world, float) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    if snap_to is not None:
        origin_in_scan = snap_to.voxel(affine[:3, 3])
        affine[:3, 3] = snap_to.world(np.round(origin_in_scan))
    return Grid(shape, affine)


def bounding_grid(grid: Grid, voxel_mm: float, divisor: int = 1,
                  snap_to: Grid | None = None) -> Grid:
    """The grid of ``voxel_mm`` voxels covering ``grid``'s box, each side a multiple of
    ``divisor`` (centred on the box; axes and ``snap_to`` as in ``ras_grid``)."""
    rotation = np.eye(3) if snap_to is None else frame(snap_to)
    corners = grid.corners_world() @ rotation  # in the grid's own frame
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    shape = tuple(round_up(int(np.floor((h - lo_) / voxel_mm)) + 1, divisor)
                  for lo_, h in zip(lo, hi))
    return ras_grid(rotation @ ((lo + hi) / 2), voxel_mm, shape, snap_to=snap_to)


def sub_grid(grid: Grid, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Grid:
    """The part of ``grid`` starting at voxel ``start`` with ``shape`` voxels."""
    affine = grid.affine.copy()
    affine[:3, 3] = grid.world(np.asarray(start, float))
    return Grid(tuple(int(n) for n in shape), affine)


def sample(data: np.ndarray, source: Grid, target: Grid, order: int = 1,
           cval: float = 0.0) -> np.ndarray:
    """Resample 3-D ``data`` on ``source`` onto ``target`` (order 0 nearest, 1 trilinear).

    Points of ``target`` outside ``source`` get ``cval``. Returns float32 for order >= 1 and the
    input dtype for order 0.
    """
    from ..io import Volume, resample_like

    matrix = np.linalg.inv(source.affine) @ target.affine
    if order > 0:
        data = np.asarray(data, np.float32)
    aligned = _aligned_view(data, matrix)
    if aligned is not None:
        return _shift_copy(aligned[0], aligned[1], target.shape, cval)
    return resample_like(Volume(data, source.affine), target.shape, target.affine,
                         order=order, fill=cval).data


def antialias_sigma(source_mm, target_mm: float) -> np.ndarray:
    """Gaussian sd (in source voxels) per source axis that gives voxels finer than ``target_mm``
    the noise of a ``target_mm`` acquisition before they are sampled there; 0 along axes whose
    voxels are not finer.

    Averaging w = target / source voxels divides white noise's variance by w; the sd is the one
    whose (discrete, as ``scipy.ndimage.gaussian_filter`` applies it) kernel does the same,
    sum(k_i^2) = 1 / w (0.6 voxels for 0.5 mm -> 1 mm, close to the box's own sd of 0.5).
    """
    source_mm = np.asarray(source_mm, float)
    return np.array([_noise_matched_sigma(float(target_mm) / v) if v < target_mm * (1 - 1e-3)
                     else 0.0 for v in source_mm.ravel()]).reshape(source_mm.shape)


def _noise_matched_sigma(ratio: float) -> float:
    """The Gaussian sd (voxels) whose discrete kernel keeps 1 / ``ratio`` of white noise's
    variance (bisection; the kept fraction falls monotonically with the sd)."""

    def kept(sd: float) -> float:
        x = np.arange(-int(4.0 * sd + 0.5), int(4.0 * sd + 0.5) + 1)
        k = np.exp(-0.5 * (x / sd) ** 2)
        k /= k.sum()
        return float((k**2).sum())

    lo, hi = 1e-3, float(ratio)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kept(mid) > 1.0 / ratio else (lo, mid)
    return 0.5 * (lo + hi)


def sample_antialiased(data: np.ndarray, source: Grid, target: Grid,
                       cval: float = 0.0) -> np.ndarray:
    """``sample`` (trilinear) after a Gaussian pre-filter of the source along axes whose voxels
    are finer than the target's (``antialias_sigma``): a 0.5 mm scan sampled at 1 mm then has the
    noise of a 1 mm scan, as the networks were trained, instead of every other voxel's noise.
    Only the part of the source under the target (plus the filter's reach) is filtered.
    Identical to ``sample`` when no source axis is finer.
    """
    from scipy import ndimage

    sigma = antialias_sigma(source.voxel_mm, float(np.max(target.voxel_mm)))
    if not (sigma > 0).any():
        return sample(data, source, target, order=1, cval=cval)
    start, shape = footprint(target, source)
    if not all(shape):
        return np.full(target.shape, cval, dtype=np.float32)
    reach = np.ceil(4.0 * sigma).astype(int) + 1
    lo = np.maximum(np.asarray(start) - reach, 0)
    hi = np.minimum(np.asarray(start) + np.asarray(shape) + reach, source.shape)
    block = np.asarray(data[tuple(slice(a, b) for a, b in zip(lo, hi))], np.float32)
    filtered = ndimage.gaussian_filter(block, sigma, mode="nearest")
    return sample(filtered, sub_grid(source, tuple(lo), tuple(hi - lo)), target, order=1,
                  cval=cval)


def _aligned_view(data: np.ndarray, matrix: np.ndarray):
    """When target voxels fall exactly on source voxels along permuted/flipped axes (e.g. an
    LIA 1 mm scan and a RAS 1 mm grid), a view of ``data`` in target axis order and the integer
    offset of the target origin in it; else None."""
    rot, offset = matrix[:3, :3], matrix[:3, 3]
    rounded = np.round(rot)
    if not np.allclose(rot, rounded, atol=1e-6) or not np.allclose(offset, np.round(offset),
                                                                   atol=1e-4):
        return None
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return None
    perm = [int(np.flatnonzero(rounded[:, a])[0]) for a in range(3)]  # source axis of target a
    view = np.transpose(data, perm)
    start = np.round(offset).astype(int)[perm]
    for a in range(3):
        if rounded[perm[a], a] < 0:
            view = np.flip(view, axis=a)
            start[a] = view.shape[a] - 1 - start[a]
    return view, start


def _shift_copy(data: np.ndarray, offset: np.ndarray, shape: tuple, cval: float) -> np.ndarray:
    """``out[i] = data[i + offset]`` (integer offset), ``cval`` outside ``data``."""
    offset = np.round(offset).astype(int)
    out = np.full(shape, cval, dtype=data.dtype)
    src, dst = [], []
    for o, n_in, n_out in zip(offset, data.shape, shape):
        lo, hi = max(0, -o), min(n_out, n_in - o)
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo + o, hi + o))
    out[tuple(dst)] = data[tuple(src)]
    return out


def footprint(inner: Grid, outer: Grid) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Start and shape (voxels of ``outer``) of the box of ``outer`` voxels covered by ``inner``;
    shape 0 along an axis when they do not overlap."""
    corners = outer.voxel(inner.corners_world())
    lo = np.maximum(np.floor(corners.min(axis=0) + 1e-4).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(axis=0) - 1e-4).astype(int) + 1, outer.shape)
    return tuple(int(v) for v in lo), tuple(int(max(v, 0)) for v in hi - lo)


def overlaps(a: Grid, b: Grid) -> bool:
    """Whether the world boxes of two grids intersect."""
    return all(n > 0 for n in footprint(a, b)[1])
