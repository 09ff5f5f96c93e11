"""Run the T1-only teacher on a volume, with the preprocessing of the original tool.

Preprocessing (``../shared/data/teacher/README.md``): resample to 1 mm (linear) if any voxel size
is outside [0.95, 1.05] mm; reorder/flip the voxel axes to RAS; crop to a shape divisible by 8;
map the 0.5th intensity percentile to 0 and the 99.5th to 1, clip. Prediction: softmax over 11
channels, argmax, channel k -> label 800 + k; optionally keep the largest connected component
of each hemisphere. Results are returned on the input's grid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import HsynexError
from ..labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS, SUBUNIT_IDS
from .network import DEFAULT_WIRING, N_CLASSES, Wiring

VOXEL_RANGE_MM = (0.95, 1.05)  # voxel sizes accepted as 1 mm without resampling
CROP_MULTIPLE = 8
PERCENTILES = (0.5, 99.5)
TILE_MARGIN = 32  # voxels; the network's receptive-field radius is about 26 voxels
# Voxels per axis run in one piece. Measured peak memory of a 160^3 block on CPU: 7.3 GB
# (torch), 4.2 GB (tensorflow); a 256^3 volume in one piece was killed at 16 GB.
MAX_TILE = 160
# channel -> label id (0 = background, k -> 800 + k)
CHANNEL_LABELS = np.array((0,) + SUBUNIT_IDS, dtype=np.int32)


def normalise_intensities(data: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """0.5th percentile -> 0, 99.5th percentile -> 1, clipped to [0, 1] (float32); the
    percentiles are those of ``reference`` (default: ``data``)."""
    lo, hi = np.percentile(data if reference is None else reference, PERCENTILES)
    if hi <= lo:
        return np.zeros(data.shape, np.float32)
    scaled = (data.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def crop_shape(shape: Sequence[int], crop: int | Sequence[int] | None) -> tuple[int, int, int]:
    """Crop size (voxels) per axis: ``crop`` rounded down to a multiple of 8, or without
    ``crop`` the largest multiple of 8 that fits the volume (at least 8)."""
    if crop is None:
        sizes = np.asarray(shape[:3], int)
    else:
        sizes = np.broadcast_to(np.asarray(crop, int), (3,))
        if np.any(sizes < CROP_MULTIPLE):
            raise HsynexError(f"crop size must be at least {CROP_MULTIPLE} voxels: {crop}")
    sizes = np.maximum(CROP_MULTIPLE, sizes // CROP_MULTIPLE * CROP_MULTIPLE)
    return tuple(int(n) for n in sizes)


def largest_component_per_hemisphere(seg: np.ndarray) -> np.ndarray:
    """Keep, for each hemisphere (801-805, 806-810), only its largest 26-connected component.

    Returns a boolean mask of the subunit voxels that are removed.
    """
    from scipy import ndimage

    removed = np.zeros(seg.shape, bool)
    structure = np.ones((3, 3, 3), bool)
    for ids in (LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS):
        mask = np.isin(seg, ids)
        components, n = ndimage.label(mask, structure)
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            removed |= mask & (components != 1 + int(np.argmax(sizes)))
    return removed


def tile_plan(size: int, tile: int, margin: int = TILE_MARGIN) -> list[tuple[int, int, int]]:
    """Tiles along one axis of ``size`` voxels: ``(tile_start, keep_start, keep_stop)``.

    Each tile is ``tile`` voxels long (or the whole axis if that is shorter) and starts on a
    multiple of 8, so the network's pooling grid is the same as for the whole block; the kept
    part of a tile lies at least ``margin`` voxels from each end of the tile unless that end is
    the block's own border (where the zero padding is the same as for the whole block). With
    ``margin`` above the receptive-field radius (measured: between 16 and 24 voxels) the tiled
    result equals the whole-block result.
    """
    if size <= tile:
        return [(0, 0, size)]
    core = tile - 2 * margin
    if core < max(margin, CROP_MULTIPLE) or tile % CROP_MULTIPLE or margin % CROP_MULTIPLE:
        raise ValueError(f"tile {tile} too small for margin {margin} (multiples of 8)")
    plan = []
    for k in range(-(-size // core)):
        start = min(max(k * core - margin, 0), size - tile)
        plan.append((start, k * core, min((k + 1) * core, size)))
    return plan


class Teacher:
    """The T1-only teacher network, loaded once and applied to many volumes.

    ``weights_path``: the HDF5 weights of FreeSurfer's hypothalamic-subunit network (not shipped
    with hsynex). ``wiring``: skip-connection wiring (default: the one that fits the weights).
    ``max_tile``: blocks larger than this (voxels per axis) run in overlapping tiles, which
    gives the same result with bounded memory.
    """

    def __init__(self, weights_path: str | os.PathLike, *, wiring: Wiring = DEFAULT_WIRING,
                 max_tile: int = MAX_TILE):
        from .network import load_teacher

        if weights_path is None:
            raise HsynexError("the teacher needs its weights file (--weights PATH)")
        self.weights_path = os.fspath(weights_path)
        self.max_tile = int(max_tile)
        self.model = load_teacher(self.weights_path, wiring)

    def _run(self, data: np.ndarray) -> np.ndarray:
        post = self.model.predict_on_batch(data[None, ..., None].astype(np.float32))
        return np.asarray(post, dtype=np.float32)[0]

    def network_posteriors(self, data: np.ndarray) -> np.ndarray:
        """Posteriors (X, Y, Z, 11) float32 of a normalised RAS 1 mm block (sizes multiples
        of 8), in overlapping tiles when the block is larger than ``max_tile``."""
        if max(data.shape) <= self.max_tile:
            return self._run(data)
        plans = [tile_plan(n, self.max_tile) for n in data.shape]
        out = np.zeros(data.shape + (N_CLASSES,), np.float32)
        for tx, kx0, kx1 in plans[0]:
            for ty, ky0, ky1 in plans[1]:
                for tz, kz0, kz1 in plans[2]:
                    tile = data[tx:tx + self.max_tile, ty:ty + self.max_tile,
                                tz:tz + self.max_tile]
                    post = self._run(tile)
                    out[kx0:kx1, ky0:ky1, kz0:kz1] = post[kx0 - tx:kx1 - tx, ky0 - ty:ky1 - ty,
                                                          kz0 - tz:kz1 - tz]
        return out

    def predict(self, vol, *, crop: int | Sequence[int] | None = None,
                center_world: Sequence[float] | None = None, lcc: bool = True,
                posteriors: bool = True):
        """Segment the subunits of a T1 ``io.Volume``.

        ``crop``: size (voxels at 1 mm, per axis, multiple of 8) of the block the network sees;
        default: the whole volume cut down to a multiple of 8. ``center_world``: centre of that
        block in RAS mm (default: the middle of the volume). ``lcc``: keep the largest connected
        component per hemisphere. Returns ``(seg, posteriors)`` on the input's grid: int32 labels
        in {0, 801..810} and float32 posteriors (X, Y, Z, 11), channel k <-> label 800 + k,
        channel 0 background (1 outside the block); with ``posteriors=False`` the second item is
        None (faster, less memory).
        """
        from ..io import Volume, crop_around, resample_to_voxel_size, to_ras, voxel_to_world

        data = np.asarray(vol.data)
        if data.ndim != 3:
            raise HsynexError(f"the teacher needs a 3-D image, got shape {list(data.shape)}",
                              vol.path)
        sizes = vol.voxel_sizes
        resampled = bool(np.any((sizes < VOXEL_RANGE_MM[0]) | (sizes > VOXEL_RANGE_MM[1])))
        work = vol.with_data(data.astype(np.float32))
        if resampled:
            work = resample_to_voxel_size(work, 1.0, order=1)
        ras, orientation = to_ras(work)
        shape = crop_shape(ras.shape, crop)
        if center_world is None:
            center_world = voxel_to_world(ras.affine, (np.array(ras.shape) - 1) / 2.0)[0]
        block = crop_around(ras, center_world, shape, fill=0.0)
        post = self.network_posteriors(normalise_intensities(block.data))
        seg = CHANNEL_LABELS[post.argmax(-1)]
        if lcc:
            removed = largest_component_per_hemisphere(seg)
            seg[removed] = 0
            post[removed, 0] += post[removed, 1:].sum(-1)
            post[removed, 1:] = 0.0
        block_seg, block_post = Volume(seg, block.affine), Volume(post, block.affine)
        if resampled:
            seg, post = self._to_input_grid_resampled(block_post, vol, lcc)
        else:
            seg, post = self._to_input_grid(block_seg, block_post, ras, orientation, posteriors)
        seg_vol = Volume(seg.astype(np.int32), np.array(vol.affine), vol.path)
        post_vol = None if not posteriors else \
            Volume(post.astype(np.float32), np.array(vol.affine), vol.path)
        return seg_vol, post_vol

    @staticmethod
    def _to_input_grid(block_seg, block_post, ras, orientation, posteriors: bool):
        """Paste the block into the RAS grid and undo the axis reordering (exact, 1 mm input)."""
        from ..io import Volume, from_ras, paste_into

        seg = paste_into(block_seg, ras.shape, ras.affine, fill=0).data
        seg = from_ras(Volume(seg, ras.affine), orientation).data
        post = None
        if posteriors:
            full = paste_into(block_post, ras.shape, ras.affine, fill=0.0).data
            full[..., 0][full.sum(-1) == 0] = 1.0
            post = from_ras(Volume(full, ras.affine), orientation).data
        return seg, post

    @staticmethod
    def _to_input_grid_resampled(block_post, vol, lcc: bool):
        """Interpolate the block's posteriors onto the (not 1 mm) input grid, then argmax."""
        from ..io import resample_like

        post = resample_like(block_post, vol.shape, vol.affine, order=1, fill=0.0).data
        post[..., 0][post.sum(-1) < 1e-6] = 1.0
        seg = CHANNEL_LABELS[post.argmax(-1)]
        if lcc:  # interpolation can split a component again
            removed = largest_component_per_hemisphere(seg)
            seg[removed] = 0
            post[removed, 0] += post[removed, 1:].sum(-1)
            post[removed, 1:] = 0.0
        return seg, post
