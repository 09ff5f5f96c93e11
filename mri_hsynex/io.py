"""Volumes and geometry: read/write MRI files, reorient to RAS, resample, crop (world-safe).

All affines map voxel indices to world coordinates in RAS millimetres (FreeSurfer's scanner RAS
for ``.mgz``, the sform/qform for NIfTI). Every operation here keeps the world position of what it
moves: a structure's centroid in mm is the same before and after (within interpolation error).
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import MAX_VOXEL_MM, MAX_VOXELS
from .errors import HsynexError

SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")
KINDS = ("image", "labels", "posteriors")


@dataclass
class Volume:
    """A 3-D (or 4-D, channels last) array on a grid given by a 4x4 voxel-to-RAS-mm affine."""

    data: np.ndarray
    affine: np.ndarray
    path: str | None = None
    # voxels stored as NaN or +-inf, read as background: 0, or the lowest value if it is negative
    # (``load_volume``)
    non_finite: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (first three dimensions), voxels."""
        return tuple(int(n) for n in self.data.shape[:3])

    @property
    def voxel_sizes(self) -> np.ndarray:
        """Voxel sizes in mm (norms of the affine's columns)."""
        return np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0))

    def with_data(self, data: np.ndarray) -> Volume:
        """The same grid holding another array (same spatial shape)."""
        if tuple(data.shape[:3]) != self.shape:
            raise ValueError(f"shape {data.shape[:3]} does not match the grid {self.shape}")
        return Volume(data, self.affine.copy(), self.path, self.non_finite)


def suffix(path: str | os.PathLike) -> str:
    """The volume-file suffix of ``path`` ('' if it is not one hsynex reads)."""
    name = os.fspath(path).lower()
    return next((s for s in SUFFIXES if name.endswith(s)), "")


# image formats hsynex does not read, by suffix (DICOM is also recognised by its content)
FOREIGN_SUFFIXES = {".dcm": "DICOM", ".ima": "DICOM", ".img": "Analyze", ".hdr": "Analyze",
                    ".mnc": "MINC", ".nrrd": "NRRD", ".nhdr": "NRRD"}
CONVERT_HINT = "convert to NIfTI or MGZ first, e.g. with dcm2niix or FreeSurfer's mri_convert"


def foreign_format(path: str | os.PathLike) -> str | None:
    """The name of a medical-image format hsynex does not read ("DICOM", "Analyze", ...) that
    ``path`` is in, by its suffix or, for DICOM files without one, the "DICM" tag at byte 128;
    None otherwise."""
    path = Path(path)
    name = path.name.lower()
    for ext, fmt in FOREIGN_SUFFIXES.items():
        if name.endswith(ext) or name.endswith(ext + ".gz"):
            return fmt
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                return "DICOM"
    except OSError:
        pass
    return None


def unsupported_file_message(path: str | os.PathLike) -> str:
    """What to tell a user whose file hsynex cannot read."""
    fmt = foreign_format(path)
    reads = f"hsynex reads {', '.join(SUFFIXES)}"
    return f"{fmt} files are not read ({CONVERT_HINT}; {reads})" if fmt else \
        f"unsupported file type (use one of {', '.join(SUFFIXES)})"


# --- reading -------------------------------------------------------------------------------------
def _check_affine(affine: np.ndarray, path) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise HsynexError("the image's affine (voxel-to-world matrix) is not finite", path)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    _check_voxel_sizes(sizes, path)
    # Relative test: columns (nearly) parallel make the grid degenerate whatever the voxel size.
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(sizes)):
        raise HsynexError("the image's affine (voxel-to-world matrix) is singular", path)
    return affine


# Smallest voxel accepted (mm): far below any MRI (ex-vivo scans reach ~0.05 mm), it catches
# headers whose voxel size is zero up to rounding.
MIN_VOXEL_MM = 1e-3


def _check_voxel_sizes(sizes, path) -> None:
    sizes = np.asarray(sizes, dtype=np.float64)
    if not np.all(np.isfinite(sizes)) or np.any(sizes < MIN_VOXEL_MM) or \
            np.any(sizes > MAX_VOXEL_MM):
        raise HsynexError(f"voxel size {np.round(sizes, 3).tolist()} mm is outside "
                          f"[{MIN_VOXEL_MM:g}, {MAX_VOXEL_MM:g}] mm", path)


def _check_header_voxel_sizes(img, path: Path) -> None:
    """Voxel sizes as the file stores them, before nibabel repairs them.

    When a NIfTI affine comes from the qform, nibabel silently replaces a zero ``pixdim`` by
    1 mm (and a negative one by its absolute value, which we accept as FSL does): re-read the raw
    header and refuse a zero or non-finite voxel size. MGH stores them in ``delta``.
    """
    header = img.header
    keys = set(header.keys()) if hasattr(header, "keys") else set()
    if "delta" in keys:  # MGH
        sizes = np.asarray(header["delta"], dtype=np.float64)
    elif "pixdim" in keys and int(header["sform_code"]) == 0:
        opener = gzip.open if suffix(path) == ".nii.gz" else open
        try:
            with opener(path, "rb") as f:
                raw = type(header).from_fileobj(f, check=False)
        except (OSError, EOFError, ValueError, zlib.error):
            return  # unreadable header bytes: reading the data reports it
        sizes = np.abs(np.asarray(raw["pixdim"][1:4], dtype=np.float64))
    else:
        return
    _check_voxel_sizes(sizes, path)


# deflate cannot compress better than about 1032:1; a compressed file smaller than its data
# size / this ratio cannot hold the data its header announces.
_MAX_DEFLATE_RATIO = 1100


def _check_data_size(img, path: Path) -> None:
    """Refuse, without reading, a file too short to hold the data its header announces."""
    proxy = img.dataobj
    offset = getattr(proxy, "offset", None)
    dtype = getattr(proxy, "dtype", None)
    if offset is None or dtype is None:
        return
    needed = int(offset) + int(np.prod(img.shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    compressed = suffix(path) in (".nii.gz", ".mgz")
    if (compressed and needed > _MAX_DEFLATE_RATIO * size + 4096) or \
            (not compressed and size < needed):
        raise HsynexError(f"file is too short for the {[int(n) for n in img.shape]} voxels its "
                          "header announces (truncated or corrupt)", path)


def _open_image(path: Path):
    import nibabel as nib

    if path.suffix.lower() == ".gz" or path.suffix.lower() == ".mgz":
        try:
            with gzip.open(path, "rb") as f:
                f.read(16)
        except (OSError, EOFError, zlib.error):
            raise HsynexError("not a readable gzip-compressed image", path) from None
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad file
        raise HsynexError(f"not a readable {suffix(path)} image ({type(err).__name__})",
                          path) from None


def load_volume(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read ``.nii``, ``.nii.gz``, ``.mgz`` or ``.mgh`` into a checked ``Volume``.

    ``kind``: "image" (float32; all-zero refused; NaN or infinite voxels read as background,
    0 or the lowest value where it is negative, counted in ``Volume.non_finite``), "labels"
    (int32, float labels rounded) or "posteriors" (float32, 4-D allowed). Every problem a user
    can cause raises ``HsynexError`` naming the file; the data is not read when the header
    already says it is unusable.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    path = Path(path)
    if not path.exists():
        raise HsynexError("file not found", path)
    if path.is_dir():
        raise HsynexError("is a directory, not an image file", path)
    if not suffix(path):
        raise HsynexError(unsupported_file_message(path), path)
    img = _open_image(path)
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # single frame (4-D) or NIfTI vector dims (5-D)
        shape = shape[:-1]
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise HsynexError(f"not a 3-D image (shape {[int(n) for n in img.shape]})", path)
    if len(shape) > 4 or (len(shape) == 4 and kind != "posteriors"):
        raise HsynexError(f"has {int(np.prod(shape[3:]))} frames; expected a single 3-D volume",
                          path)
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise HsynexError(f"dimensions {list(shape)} are too large to be an MRI volume", path)
    _check_header_voxel_sizes(img, path)
    affine = _check_affine(img.affine, path)
    _check_data_size(img, path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise HsynexError(f"cannot read the image data ({type(err).__name__}: truncated?)",
                          path) from None
    data = data.reshape(shape)
    if kind == "labels":
        if not np.all(np.isfinite(data)):
            raise HsynexError("label map has NaN or infinite values", path)
        data = np.rint(data).astype(np.int32) if data.dtype.kind == "f" else data.astype(np.int32)
    non_finite = 0
    if kind == "posteriors":
        data = np.asarray(data, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise HsynexError("posteriors have NaN or infinite values", path)
    elif kind == "image":
        data = np.asarray(data, dtype=np.float32)
        finite = np.isfinite(data)
        if not finite.all():
            # quantitative maps often store the background as NaN: read it as background
            if not finite.any():
                raise HsynexError("image has no finite voxel value (all NaN or infinite)", path)
            non_finite = int(finite.size - np.count_nonzero(finite))
            background = min(0.0, float(data[finite].min()))  # 0, or below any voxel
            data = np.where(finite, data, np.float32(background))
        if not np.any(data):
            raise HsynexError("image is all zeros", path)
    return Volume(data, affine, str(path), non_finite)


# --- writing -------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    An interrupted or failed write leaves no file under the final name (and no temporary file);
    an existing file under the final name is then left as it was. The file gets the usual
    permissions (0666 minus the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise HsynexError("output folder does not exist", folder)
    if not os.access(folder, os.W_OK):
        raise HsynexError("output folder is not writable", folder)
    if path.is_dir():
        raise HsynexError("output path is a directory", path)
    sfx = suffix(path) or path.suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=folder)
    except OSError as err:
        raise HsynexError(f"cannot write in the output folder ({err.strerror})", folder) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_volume(vol: Volume, path: str | os.PathLike, *, kind: str = "image") -> None:
    """Write ``vol`` atomically; labels as int32, images and posteriors as float32 (MGH-safe)."""
    import nibabel as nib

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    path = Path(path)
    sfx = suffix(path)
    if not sfx:
        raise HsynexError(f"unsupported output file type (use one of {', '.join(SUFFIXES)})",
                          path)
    data = np.asarray(vol.data)
    if kind == "labels":
        # float labels (e.g. after linear interpolation) are rounded, not truncated
        data = (np.rint(data) if data.dtype.kind == "f" else data).astype(np.int32)
    else:
        data = data.astype(np.float32)
    affine = np.asarray(vol.affine, dtype=np.float64)
    if sfx in (".mgz", ".mgh"):
        img = nib.MGHImage(data, affine)
    else:
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


# --- geometry ------------------------------------------------------------------------------------
def voxel_to_world(affine: np.ndarray, ijk) -> np.ndarray:
    """(N, 3) voxel coordinates -> (N, 3) world RAS mm."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz) -> np.ndarray:
    """(N, 3) world RAS mm -> (N, 3) voxel coordinates (not rounded)."""
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    return (xyz - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T


@dataclass(frozen=True)
class Orientation:
    """How ``to_ras`` reordered a volume: ``perm[k]`` = original axis now at k; ``flip[k]``."""

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]


def ras_axes(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """``perm[k]``: the voxel axis nearest world axis k (R, A, S); ``flip[k]``: it runs the
    other way."""
    import nibabel as nib

    codes = nib.orientations.io_orientation(affine)  # (axis, world dir, +/-1) per voxel axis
    perm = [0, 0, 0]
    flip = [False, False, False]
    for axis, (world, sign) in enumerate(codes):
        perm[int(world)] = axis
        flip[int(world)] = sign < 0
    return tuple(perm), tuple(flip)


def to_ras(vol: Volume) -> tuple[Volume, Orientation]:
    """Permute/flip voxel axes so they increase along R, A, S; world coordinates unchanged."""
    perm, flip = ras_axes(vol.affine)
    data = np.transpose(vol.data, perm + tuple(range(3, vol.data.ndim)))
    affine = vol.affine[:, list(perm) + [3]].copy()
    for k in range(3):
        if flip[k]:
            data = np.flip(data, axis=k)
            n = data.shape[k]
            affine[:3, 3] += affine[:3, k] * (n - 1)
            affine[:3, k] *= -1
    orientation = Orientation(perm, flip, vol.shape, tuple(map(tuple, vol.affine)))
    return Volume(np.ascontiguousarray(data), affine, vol.path), orientation


def from_ras(vol: Volume, orientation: Orientation) -> Volume:
    """Exact inverse of ``to_ras`` (also for 4-D arrays produced on the RAS grid)."""
    data = vol.data
    for k in range(3):
        if orientation.flip[k]:
            data = np.flip(data, axis=k)
    inverse = np.argsort(orientation.perm)
    data = np.transpose(data, tuple(inverse) + tuple(range(3, data.ndim)))
    return Volume(np.ascontiguousarray(data), np.array(orientation.affine), vol.path)


def resample_like(vol: Volume, target_shape: Sequence[int], target_affine: np.ndarray, *,
                  order: int, fill: float = 0.0) -> Volume:
    """Resample ``vol`` onto the grid (``target_shape``, ``target_affine``) by world position.

    ``order`` 0 (labels), 1 or 3 (images). 4-D arrays are resampled channel by channel.
    """
    from scipy import ndimage

    target_shape = tuple(int(n) for n in target_shape[:3])
    target_affine = np.asarray(target_affine, dtype=np.float64)
    # target voxel -> source voxel
    matrix = np.linalg.inv(vol.affine) @ target_affine
    data = vol.data
    channels = [data] if data.ndim == 3 else [data[..., c] for c in range(data.shape[3])]
    out = []
    for channel in channels:
        src = channel.astype(np.float32) if order > 0 and channel.dtype.kind != "f" else channel
        out.append(ndimage.affine_transform(src, matrix[:3, :3], offset=matrix[:3, 3],
                                            output_shape=target_shape, order=order,
                                            mode="constant", cval=fill, prefilter=order > 1))
    result = out[0] if data.ndim == 3 else np.stack(out, axis=-1)
    return Volume(result, target_affine.copy(), vol.path)


def resample_to_voxel_size(vol: Volume, voxel_mm: float | Sequence[float], *,
                           order: int) -> Volume:
    """Resample to a new voxel size (mm) over the same field of view and orientation.

    The centre of the field of view keeps its world position.
    """
    new = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    if np.any(new <= 0):
        raise ValueError("voxel size must be positive")
    old = vol.voxel_sizes
    extent = np.array(vol.shape) * old
    shape = np.maximum(1, np.round(extent / new)).astype(int)
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, :3] / old * new
    centre_old = voxel_to_world(vol.affine, (np.array(vol.shape) - 1) / 2.0)[0]
    centre_new = voxel_to_world(affine, (shape - 1) / 2.0)[0]
    affine[:3, 3] += centre_old - centre_new
    return resample_like(vol, shape, affine, order=order)


def crop_around(vol: Volume, center_world: Sequence[float], shape: Sequence[int], *,
                fill: float = 0) -> Volume:
    """A box of ``shape`` voxels centred on the voxel nearest ``center_world`` (mm).

    Outside the volume it is padded with ``fill``; kept voxels keep their world coordinates.
    """
    shape = np.array([int(n) for n in shape[:3]])
    center = np.rint(world_to_voxel(vol.affine, center_world)[0]).astype(int)
    start = center - shape // 2
    return _box(vol, start, shape, fill)


def _box(vol: Volume, start: np.ndarray, shape: np.ndarray, fill) -> Volume:
    out = np.full(tuple(shape) + vol.data.shape[3:], fill, dtype=vol.data.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + shape, vol.shape)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            vol.data[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
    affine = vol.affine.copy()
    affine[:3, 3] = voxel_to_world(vol.affine, start)[0]
    return Volume(out, affine, vol.path)


def paste_into(crop: Volume, target_shape: Sequence[int], target_affine: np.ndarray, *,
               fill: float = 0) -> Volume:
    """Put ``crop`` back onto a larger grid it was cut from (same axes, integer offset)."""
    offset = world_to_voxel(crop.affine, voxel_to_world(target_affine, np.zeros(3)))[0]
    start = np.rint(offset).astype(int)
    if not np.allclose(offset, start, atol=1e-3) or \
            not np.allclose(crop.affine[:3, :3], np.asarray(target_affine)[:3, :3], atol=1e-6):
        raise ValueError("the crop is not aligned with the target grid")
    shape = np.array([int(n) for n in target_shape[:3]])
    pasted = _box(crop, start, shape, fill)
    return Volume(pasted.data, np.asarray(target_affine, dtype=np.float64).copy(), crop.path)


def centroid_world(labels: Volume, ids: Iterable[int]) -> np.ndarray | None:
    """Centroid (RAS mm) of the voxels whose label is in ``ids``; None if there are none."""
    mask = np.isin(labels.data, list(ids))
    if not mask.any():
        return None
    return voxel_to_world(labels.affine, np.argwhere(mask).mean(axis=0))[0]
