"""One segmentation: posteriors on the model grid, turned into outputs on demand.

Nothing heavy is computed until asked: the native-grid segmentation is built once (``seg``), the
4-D native posteriors only when POST is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import HsynexError
from ..labels import ALL_OUTPUT_ROWS, GROUPINGS, SUBUNIT_IDS, SUBUNIT_NAMES
from .grid import Grid, footprint, sample, sub_grid
from .localise import Localisation
from .outputs import OutputPaths, StagedFiles, check_output_paths
from .postprocess import MIN_REGION_AGREEMENT, dilate, hard_channels, region_agreement

CHANNEL_LABELS = np.array((0,) + SUBUNIT_IDS, dtype=np.int32)  # channel -> label id
ROW_NAMES = {row.id: row.name for row in ALL_OUTPUT_ROWS}
MIN_CONFIDENCE = 0.7  # mean max posterior inside the structure below this: low confidence
# share of the segmentation in or next to (one voxel) voxels where the scan holds no tissue (its
# border-connected minimum: a brain mask removed it) from which QC flags the scan. Measured: the
# Mindboggle OASIS T1s, whose masks remove 7-41 % of their subjects' hypothalamus, 0.12-0.34;
# sub-08's T1 zeroed under a plane through its hypothalamus 0.07-0.11, at its lowest point 0.04,
# 2 mm under it 0; renders stripped with a one-voxel margin 0-0.015 (docs/segment.md)
MAX_MASKED = 0.05
QC_ZOOM_MM = 40.0


@dataclass
class SegmentationResult:
    """Posteriors (model grid, channels-last, 0 background + 801-810) and what produced them."""

    image: object  # io.Volume of the input scan
    image_grid: Grid
    crop_grid: Grid
    posteriors: np.ndarray
    stage1: np.ndarray
    localisation: Localisation
    resample: str
    networks: object
    backend: str
    timings: dict = field(default_factory=dict)
    aseg_path: Path | None = None
    # posteriors the volumes are summed from when they differ from ``posteriors`` (partial-volume
    # correction, predict/pvc.py); None: the posteriors themselves
    volume_posteriors: np.ndarray | None = None
    # crop voxels (model grid) where the scan holds no tissue (``pvc.filled_background``: a
    # skull-stripping mask's zeros); None: none near the segmentation
    no_tissue: np.ndarray | None = None

    # --- grids and arrays ------------------------------------------------------------------
    @property
    def output_grid(self) -> Grid:
        """Grid of SEG/POST: the input's (``native``) or the 1 mm model grid (``model``)."""
        return self.image_grid if self.resample == "native" else self.crop_grid

    @cached_property
    def _native_box(self) -> tuple[tuple[slice, ...], np.ndarray]:
        """Posteriors resampled onto the input voxels inside the crop's footprint."""
        start, shape = footprint(self.crop_grid, self.image_grid)
        box = sub_grid(self.image_grid, start, shape)
        post = self._prefiltered_posteriors()
        out = np.empty(tuple(shape) + (post.shape[-1],), np.float32)
        for c in range(post.shape[-1]):
            out[..., c] = sample(post[..., c], self.crop_grid, box, order=1,
                                 cval=1.0 if c == 0 else 0.0)
        region = tuple(slice(s, s + n) for s, n in zip(start, shape))
        return region, out

    def _prefiltered_posteriors(self) -> np.ndarray:
        """Box-average the model-grid posteriors over an input voxel when input voxels are
        coarser than model voxels (partial voluming instead of point sampling)."""
        from scipy import ndimage

        axes = self.crop_grid.affine[:3, :3] / self.crop_grid.voxel_mm
        # an input voxel's extent along each model-grid axis, mm
        extent = np.abs(axes.T @ self.image_grid.affine[:3, :3]).sum(axis=1)
        size = np.maximum(np.rint(extent / self.crop_grid.voxel_mm).astype(int), 1)
        if np.all(size <= 1):
            return self.posteriors
        return ndimage.uniform_filter(self.posteriors, size=tuple(size) + (1,), mode="nearest")

    @cached_property
    def model_seg(self) -> np.ndarray:
        """int32 labels 0/801-810 on the model grid (``postprocess.hard_channels``)."""
        return CHANNEL_LABELS[hard_channels(self.posteriors)]

    @cached_property
    def seg(self) -> np.ndarray:
        """int32 labels 0/801-810 on the output grid."""
        if self.resample == "model":
            return self.model_seg
        region, post = self._native_box
        seg = np.zeros(self.image_grid.shape, np.int32)
        seg[region] = CHANNEL_LABELS[hard_channels(post)]
        return seg

    def output_posteriors(self, dtype: str | np.dtype = np.float32) -> np.ndarray:
        """float32 (X, Y, Z, 11) posteriors on the output grid (background 1 outside the crop).
        On the native grid of a 256³ scan this is ~740 MB: built only when asked, directly in
        the file's ``dtype`` (e.g. big-endian for MGH) so that writing needs no copy."""
        if self.resample == "model":
            return self.posteriors.astype(dtype)
        region, post = self._native_box
        out = np.zeros(tuple(self.image_grid.shape) + (post.shape[-1],), dtype)
        out[..., 0] = 1.0
        out[region] = post
        return out

    def _save_posteriors(self, path: Path) -> None:
        """Write POST (float32 4-D) without the full-size copies a generic writer makes."""
        import nibabel as nib

        from ..io import suffix

        affine = np.asarray(self.output_grid.affine, np.float64)
        if suffix(path) in (".mgz", ".mgh"):
            image = nib.MGHImage(self.output_posteriors(np.dtype(">f4")), affine)
        else:
            image = nib.Nifti1Image(self.output_posteriors(np.float32), affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
        nib.save(image, str(path))

    # --- volumes and QC --------------------------------------------------------------------
    @cached_property
    def volumes(self) -> dict[int, tuple[int, float]]:
        """Label id -> (NVoxels in SEG, soft volume mm³ on the model grid) for 801-810 and the
        groupings 811-813."""
        from ..volumes import structure_volumes

        voxel_mm3 = float(abs(np.linalg.det(self.crop_grid.affine[:3, :3])))
        soft = structure_volumes(self.model_seg, self.posteriors if self.volume_posteriors is None
                                 else self.volume_posteriors, voxel_mm3)
        counts = self._label_counts()
        out = {label: (int(counts[label - 800]), soft[label][1]) for label in SUBUNIT_IDS}
        for group, members in GROUPINGS.items():
            out[group] = (sum(out[m][0] for m in members), soft[group][1])
        return out

    def _label_counts(self) -> np.ndarray:
        """Voxel count of each channel's label in SEG (index = label - 800)."""
        seg = self.seg
        if self.resample == "native":  # SEG is zero outside the crop's footprint
            seg = seg[self._native_box[0]]
        return np.bincount(np.maximum(seg.ravel() - 800, 0), minlength=11)

    @cached_property
    def region_agreement(self) -> float:
        """Share of the segmentation (model grid) within ``VENTRAL_DC_DILATION_MM`` of the
        localised ventral DC + 3rd ventricle (``postprocess.region_agreement``): about 1 on
        whole-head scans; low where that region is incomplete and the mask kept the networks'
        blobs beyond it (``postprocess.anatomical_mask``)."""
        from ..constants import VENTRAL_DC_DILATION_MM

        grid = self.crop_grid
        near = dilate(self.localisation.region_on(grid), VENTRAL_DC_DILATION_MM, grid.voxel_mm)
        return region_agreement(self.model_seg > 0, near)

    @cached_property
    def masked_share(self) -> float:
        """Share of the segmentation (model grid) in or face-adjacent to the crop voxels where
        the scan holds no tissue (``no_tissue``); 0 where there are none. The networks often
        leave the zeros out, so the contact, not the overlap, tells a mask that cut the
        structure."""
        from scipy import ndimage

        inside = self.model_seg > 0
        if self.no_tissue is None or not inside.any():
            return 0.0
        return float(ndimage.binary_dilation(self.no_tissue)[inside].mean())

    @cached_property
    def qc(self) -> dict:
        """QC metrics and flag: mean max posterior inside the structure (model grid), volume
        z-scores against the reference, reasons for ``qc_flag``."""
        from .reference import load_reference, z_limit, z_scores

        reference = load_reference()
        limit = z_limit(reference)  # the reference's own prediction limit (n subjects)
        inside = self.model_seg > 0
        confidence = float(self.posteriors.max(axis=-1)[inside].mean()) if inside.any() else 0.0
        soft = {label: v[1] for label, v in self.volumes.items()}
        z = z_scores(soft, reference)
        reasons = [f"subunit missing: {SUBUNIT_NAMES[label]}" for label in SUBUNIT_IDS
                   if self.volumes[label][0] == 0]
        reasons += [f"implausible volume: {ROW_NAMES[label]} ({soft[label]:.0f} mm3, z={v:+.1f})"
                    for label, v in z.items() if abs(v) > limit]
        if confidence < MIN_CONFIDENCE:
            reasons.append(f"low confidence: mean max posterior {confidence:.2f} "
                           f"< {MIN_CONFIDENCE}")
        masked = self.masked_share
        if masked >= MAX_MASKED:
            reasons.append(f"{masked:.0%} of the segmentation lies in or next to voxels where "
                           "the scan holds no tissue (a brain mask that cuts into or ends at the "
                           "hypothalamus?): the volume counts only what the scan shows")
        agreement = self.region_agreement
        if agreement < MIN_REGION_AGREEMENT:
            reasons.append(f"the ventral DC found ({self.localisation.method}) holds only "
                           f"{agreement:.0%} of the segmentation (a field of view or brain mask "
                           f"that ends near the hypothalamus?)")
        return {"mean_max_posterior": round(confidence, 4),
                "region_agreement": round(agreement, 4),
                "masked_share": round(masked, 4),
                "z_scores": {ROW_NAMES[k]: round(v, 2) for k, v in z.items()},
                "z_limit": round(limit, 2), "min_confidence": MIN_CONFIDENCE,
                "reference": reference.get("provenance", ""),
                "qc_flag": bool(reasons), "qc_reasons": reasons}

    @cached_property
    def sidecar(self) -> dict:
        """JSON-able description of the run (written next to SEG)."""
        import keras

        loc = self.localisation
        return {
            "hsynex_version": __version__,
            "input": str(getattr(self.image, "path", "") or ""),
            "input_non_finite_voxels": int(getattr(self.image, "non_finite", 0)),
            # voxel size along the stored axes: the slice thickness is a covariate for
            # partial-volume-corrected volumes (they fall with thick slices, MODEL_CARD.md)
            "input_voxel_mm": [round(float(v), 4) for v in self.image_grid.voxel_mm],
            "aseg": None if self.aseg_path is None else str(self.aseg_path),
            "output_grid": self.resample,
            "models": {"folder": str(self.networks.folder), "sha256": self.networks.hashes(),
                       "trained_with": self.networks.settings.get("hsynex_version")},
            "backend": self.backend, "keras_version": keras.__version__,
            "runtime_s": {k: round(v, 3) for k, v in self.timings.items()},
            "localisation": {"method": loc.method,
                             "crop_centre_ras_mm": [round(float(v), 2) for v in loc.centre_world],
                             **loc.details},
            "model_grid": {"shape": list(self.crop_grid.shape),
                           "affine": np.round(self.crop_grid.affine, 4).tolist()},
            "volume_method": self.volume_method,
            "volumes_mm3": {ROW_NAMES[k]: round(v[1], 2) for k, v in self.volumes.items()},
            "nvoxels": {ROW_NAMES[k]: v[0] for k, v in self.volumes.items()},
            "qc": {k: v for k, v in self.qc.items() if k not in ("qc_flag", "qc_reasons")},
            "qc_flag": self.qc["qc_flag"], "qc_reasons": self.qc["qc_reasons"],
        }

    @property
    def thick_slice_mm(self) -> float | None:
        """The slice thickness (mm) of a thick-slice scan whose volumes are partial-volume
        corrected (one voxel axis at least 1.5 mm and 1.5 x the others, ``pvc.slab_axis``), else
        None. Such volumes read lower than the same head at 1 mm and move with where the slices
        fall (MODEL_CARD.md, limits)."""
        from .pvc import slab_axis

        sizes = np.asarray(self.image_grid.voxel_mm, float)
        if self.volume_posteriors is None or slab_axis(sizes) is None:
            return None
        return float(sizes.max())

    @property
    def volume_method(self) -> str:
        """How the soft volumes were counted (sidecar and stats header)."""
        return ("partial-volume corrected posteriors" if self.volume_posteriors is not None
                else "posteriors")

    def volumes_table(self) -> str:
        """The volumes as a fixed-width text table (printed by the command)."""
        lines = [f"{'structure':<36s}{'NVoxels':>9s}{'Volume_mm3':>12s}"]
        for row in ALL_OUTPUT_ROWS:
            n, v = self.volumes[row.id]
            lines.append(f"{row.name:<36s}{n:>9d}{v:>12.1f}")
        return "\n".join(lines)

    # --- writing ---------------------------------------------------------------------------
    def write(self, paths: OutputPaths, subject: str | None = None,
              cmdline: str | None = None) -> list[Path]:
        """Write every requested output and the JSON sidecar next to SEG, all or nothing.

        Each file goes to a temporary name in its folder first; they are renamed together at
        the end, and removed if anything fails. Returns the written paths.
        """
        t0 = time.perf_counter()
        inputs = [Path(str(getattr(self.image, "path", "") or ""))]
        if self.aseg_path is not None:
            inputs.append(self.aseg_path)
        check_output_paths(paths, inputs)
        subject = subject or _subject_name(inputs[0])
        staged = StagedFiles()
        try:
            self._write_all(paths, staged, subject, cmdline)
            sidecar = dict(self.sidecar, subject=subject, cmdline=cmdline,
                           created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           outputs={k: str(v) for k, v in paths.as_dict().items()})
            sidecar["runtime_s"] = dict(sidecar["runtime_s"],
                                        write=round(time.perf_counter() - t0, 3))
            with open(staged.tmp(paths.sidecar), "w") as f:
                json.dump(sidecar, f, indent=1)
            return staged.commit()
        except OSError as err:
            staged.discard()
            raise HsynexError(f"cannot write output ({err.strerror or err})",
                              err.filename) from None
        except BaseException:
            staged.discard()
            raise

    def _write_all(self, paths: OutputPaths, staged: StagedFiles, subject: str,
                   cmdline: str | None) -> None:
        from ..io import Volume, save_volume

        grid = self.output_grid
        seg_volume = Volume(self.seg, grid.affine, None)
        save_volume(seg_volume, staged.tmp(paths.seg), kind="labels")
        if paths.post is not None:
            self._save_posteriors(staged.tmp(paths.post))
        if paths.vol_csv is not None:
            from ..volumes import write_volumes_csv

            write_volumes_csv(staged.tmp(paths.vol_csv), [self.volumes_row(subject)])
        if paths.stats is not None:
            self._write_stats(staged.tmp(paths.stats), subject, paths.seg, cmdline)
        if paths.qc is not None:
            self._write_qc(staged.tmp(paths.qc), seg_volume, subject)

    def volumes_row(self, subject: str) -> dict:
        """One row of the volumes CSV: ``subject`` and soft volumes (mm³) by column name."""
        from ..volumes import volumes_csv_row

        return volumes_csv_row(subject, self.volumes)

    def _write_stats(self, path: Path, subject: str, seg_path: Path, cmdline: str | None) -> None:
        from ..stats import write_stats
        from ..volumes import stats_rows

        voxel_mm3 = float(abs(np.linalg.det(self.output_grid.affine[:3, :3])))
        write_stats(path, stats_rows(self.volumes), subject=subject, seg_file=str(seg_path),
                    voxel_volume_mm3=voxel_mm3, cmdline=cmdline or "mri_hsynex segment",
                    in_vol_file=str(getattr(self.image, "path", "") or ""),
                    volume_method=self.volume_method, qc_reasons=self.qc["qc_reasons"])

    def _write_qc(self, path: Path, seg_volume, subject: str) -> None:
        from ..io import Volume
        from ..qc import save_overlay_png

        if self.resample == "native":
            image = Volume(self.image.data, self.image_grid.affine)
        else:
            image = Volume(sample(self.image.data, self.image_grid, self.crop_grid, order=1),
                           self.crop_grid.affine)
        centre = None if np.any(self.seg) else self.localisation.centre_world
        title = f"{subject}  (hsynex {__version__}" + (", QC flag)" if self.qc["qc_flag"]
                                                       else ")")
        save_overlay_png(path, image, seg_volume, title=title, center_world=centre,
                         zoom_mm=QC_ZOOM_MM)


def _subject_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".mgz", ".mgh"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name
