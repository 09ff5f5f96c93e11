"""Configuration of the synthetic-image generator: one small JSON-able dataclass.

Defaults are SynthSeg's published defaults (Billot et al. 2023) unless a comment says otherwise.
Distances are in mm, sizes in voxels, angles in degrees; label ids are FreeSurfer ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import HsynexError

TARGETS = ("stage1", "stage2", "localiser")


def _pair(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise HsynexError(f"generator config: {name} must be two numbers [low, high]") from None
    if hi < lo:
        raise HsynexError(f"generator config: {name} must have low <= high")
    return lo, hi


@dataclass
class GeneratorConfig:
    """Everything the generator randomises, and the shape of what it produces.

    Geometry: ``output_shape`` voxels at ``output_voxel_mm`` (isotropic, RAS) are cut from label
    maps at ``input_voxel_mm``; the crop is centred on the ``center`` input of the generator
    plus a uniform jitter of up to ``crop_jitter_mm`` per axis.
    """

    # --- geometry ---------------------------------------------------------------------------------
    output_shape: tuple[int, int, int] = (64, 64, 64)
    output_voxel_mm: float = 1.0
    input_voxel_mm: float = 1.0
    max_label: int = 830  # labels above this (or below 0) are treated as background 0
    target: str = "stage2"  # "stage1" | "stage2" | "localiser": the one-hot class table
    crop_jitter_mm: float = 8.0  # hsynex: crops around the hypothalamus, not random crops
    # --- spatial deformation ----------------------------------------------------------------------
    scaling_bounds: float = 0.2  # scale factor U(1-b, 1+b) per axis
    rotation_bounds_deg: float = 15.0  # U(-b, b) per axis
    shearing_bounds: float = 0.012  # U(-b, b) per off-diagonal term
    translation_bounds_mm: float = 0.0  # U(-b, b) per axis (SynthSeg: off)
    nonlin_std: float = 4.0  # std of the elastic displacement ~ U(0, nonlin_std), input voxels
    nonlin_scale: float = 0.04  # coarse grid cells per input voxel (1 / grid spacing)
    # --- flip -------------------------------------------------------------------------------------
    flip_prob: float = 0.5
    # --- hypothalamus growth / shrinkage (hsynex; see generator/morph.py) ------------------------
    morph_prob: float = 0.0  # probability per sample (0: off, as in SynthSeg)
    morph_mean_mm: float = 0.65  # mean surface offset U(-m, m) per side, mm
    morph_field_std_mm: float = 0.4  # sd of the smooth offset field at its nodes, mm
    # --- render finer, then pool; resize with neighbours fixed and vice versa (hsynex, issue 13) --
    supersample: int = 1  # labels, shape changes and GMM on an s-times finer grid, then pooled
    resize_prob: float = 0.0  # probability of resizing the hypothalamus (generator/resize.py)
    resize_max_fraction: float = 0.25  # relative volume change U(-m, m) per side
    resize_ventricle_prob: float = 0.5  # ventricle kind, else ventral-DC kind (never if tied)
    resize_outer_prob: float = 0.0  # share of the ventral-DC kind eroding all the outer surface
    resize_max_mm: float = 2.0  # how far from the boundary voxels may change, mm
    neighbour_prob: float = 0.0  # probability of resizing the neighbours (hypothalamus fixed)
    neighbour_max_mm: float = 1.0  # their boundaries move by up to this, in fine-voxel steps
    # --- CSF around the brain (hsynex; see generator/csf_shell.py) -------------------------------
    csf_shell_prob: float = 0.0  # probability of relabelling background next to the brain as CSF
    csf_shell_mm: tuple[float, float] = (1.0, 4.0)  # its depth U(low, high), mm
    # --- conditional GMM --------------------------------------------------------------------------
    mean_range: tuple[float, float] = (0.0, 250.0)
    std_range: tuple[float, float] = (0.0, 35.0)
    share_left_right: bool = True  # left/right partners share a generation class
    # hsynex: background (label 0) handling, for label maps without extra-cerebral labels.
    background_zero_prob: float = 0.2  # background is exactly 0 (skull-stripped look)
    background_dark_prob: float = 0.2  # background is dark: means U(0, background_dark_max)
    background_dark_max: float = 20.0
    background_regions: int = 4  # label 0 split into this many smooth random regions
    background_region_scale: float = 0.08  # coarse grid cells per input voxel of those regions
    # [source label, tied label, probability]: the tied label's class takes the source label's
    # intensity parameters (real scans show little hypothalamus / ventral-DC contrast).
    tie_classes: tuple[tuple[int, int, float], ...] = ((28, 801, 0.3),)
    # hsynex (issue 13): in untied samples, with this probability the first tie row's tied class
    # takes the source's parameters with its mean moved by a relative U(near_tie_contrast) of
    # random sign: the few-percent hypothalamus / ventral-DC contrast of real scans, which the
    # uniform means rarely give, while the boundary stays visible (resizing may move it).
    near_tie_prob: float = 0.0
    near_tie_contrast: tuple[float, float] = (0.05, 0.3)
    # hsynex (issue 13): with this probability a sample's class means are pulled toward their
    # average by a factor U(low_contrast_range), stds kept: PD-like images where every tissue is
    # a few noise sds from its neighbours (independent uniform means almost never give that)
    low_contrast_prob: float = 0.0
    low_contrast_range: tuple[float, float] = (0.1, 0.4)
    # --- bias field -------------------------------------------------------------------------------
    bias_std: float = 0.7  # log-field std ~ U(0, bias_std)
    bias_scale: float = 0.025  # coarse grid cells per input voxel
    # --- intensity --------------------------------------------------------------------------------
    clip_max: float = 300.0
    gamma_std: float = 0.5  # gamma = exp(N(0, gamma_std))
    noise_std_max: float = 0.02  # hsynex: Gaussian noise U(0, max) on the [0, 1] image
    # --- resolution / slice thickness ---------------------------------------------------------
    prob_min_res: float = 0.05  # probability of keeping the output resolution (no degradation)
    prob_aniso: float = 0.9  # otherwise: anisotropic (one random axis) with this probability
    max_res_iso: float = 4.0  # mm
    max_res_aniso: float = 9.0  # mm (hsynex: 9 to cover 5-8 mm clinical slices plus gaps)
    random_thickness: bool = True  # slice thickness U(output voxel, resolution), else = resolution
    blur_range: float = 1.03  # blur sigma multiplied by U(1/b, b)
    prob_blur_only: float = 0.0  # hsynex: blur (thickness U(r0, max_res_iso)), no downsampling
    rician_std_max: float = 0.0  # hsynex: Rician noise std U(0, m) after resolution, [0, 1] image
    # --- brain-mask cut (hsynex; see generator/mask_cut.py) ---------------------------------------
    cut_prob: float = 0.0  # probability of zeroing the image beyond a plane under the hypothalamus
    cut_offset_mm: tuple[float, float] = (0.0, 10.0)  # the plane's distance below it, U(low, high)
    cut_max_tilt_deg: float = 30.0  # the plane's tilt from axial, any direction
    cut_corner_prob: float = 0.5  # only in front of a second (coronal-ish) plane: a box corner
    # --- targets ----------------------------------------------------------------------------------
    distance_maps: bool = True
    distance_max_mm: float = 8.0

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(n) for n in self.output_shape)
        except (TypeError, ValueError):
            raise HsynexError("generator config: output_shape must be three integers") from None
        if len(shape) != 3 or min(shape) < 2:
            raise HsynexError("generator config: output_shape must be three integers >= 2")
        self.output_shape = shape
        self.mean_range = _pair(self.mean_range, "mean_range")
        self.std_range = _pair(self.std_range, "std_range")
        self.near_tie_contrast = _pair(self.near_tie_contrast, "near_tie_contrast")
        self.low_contrast_range = _pair(self.low_contrast_range, "low_contrast_range")
        self.cut_offset_mm = _pair(self.cut_offset_mm, "cut_offset_mm")
        self.csf_shell_mm = _pair(self.csf_shell_mm, "csf_shell_mm")
        if not 0.0 < self.csf_shell_mm[0] <= self.csf_shell_mm[1] <= 20.0:
            raise HsynexError("generator config: csf_shell_mm must be 0 < low <= high <= 20")
        ties = []
        for tie in self.tie_classes:
            if len(tie) != 3:
                raise HsynexError("generator config: tie_classes rows are [source, tied, prob]")
            ties.append((int(tie[0]), int(tie[1]), float(tie[2])))
        self.tie_classes = tuple(ties)
        if self.target not in TARGETS:
            raise HsynexError(f"generator config: target must be one of {TARGETS}, "
                              f"not {self.target!r}")
        for name in ("morph_mean_mm", "morph_field_std_mm", "resize_max_mm", "neighbour_max_mm",
                     "rician_std_max", "cut_max_tilt_deg"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise HsynexError(f"generator config: {name} must be >= 0")
            setattr(self, name, value)
        for name in ("output_voxel_mm", "input_voxel_mm", "max_res_iso", "max_res_aniso",
                     "distance_max_mm", "blur_range"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise HsynexError(f"generator config: {name} must be > 0")
            setattr(self, name, value)
        for name in ("flip_prob", "morph_prob", "background_zero_prob", "background_dark_prob",
                     "prob_min_res", "prob_aniso", "resize_prob", "resize_max_fraction",
                     "resize_ventricle_prob", "resize_outer_prob", "neighbour_prob",
                     "prob_blur_only", "near_tie_prob",
                     "low_contrast_prob", "cut_prob", "cut_corner_prob", "csf_shell_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise HsynexError(f"generator config: {name} must be in [0, 1]")
            setattr(self, name, value)
        if self.background_zero_prob + self.background_dark_prob > 1.0:
            raise HsynexError("generator config: background_zero_prob + background_dark_prob > 1")
        if int(self.supersample) < 1 or int(self.supersample) > 4:
            raise HsynexError("generator config: supersample must be 1, 2, 3 or 4")
        self.supersample = int(self.supersample)
        if int(self.max_label) < 1 or int(self.max_label) > 65535:
            raise HsynexError("generator config: max_label must be in [1, 65535]")
        self.max_label = int(self.max_label)
        if int(self.background_regions) < 1:
            raise HsynexError("generator config: background_regions must be >= 1")
        self.background_regions = int(self.background_regions)

    # --- derived ----------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of channels of the one-hot ``target`` output."""
        from .. import labels

        if self.target == "stage1":
            return len(labels.STAGE1_CLASSES)
        if self.target == "stage2":
            return len(labels.STAGE2_CLASSES)
        return len(labels.LOCALISER_CLASS_NAMES)

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        """Shape of the grid the labels are drawn at (``supersample`` x the output shape)."""
        return tuple(n * self.supersample for n in self.output_shape)

    @property
    def fine_voxel_mm(self) -> float:
        """Voxel size (mm) of the grid the labels are drawn at."""
        return self.output_voxel_mm / self.supersample

    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        """Extent of the output crop in mm per axis."""
        return tuple(n * self.output_voxel_mm for n in self.output_shape)

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> GeneratorConfig:
        """The config from a dict such as ``to_dict()``'s; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HsynexError(f"unknown generator config keys {sorted(unknown)}", source)
        try:
            return cls(**d)
        except HsynexError as err:
            raise HsynexError(err.what, source) from None

    @classmethod
    def load(cls, path: str | Path) -> GeneratorConfig:
        """Read a JSON file holding either a generator config or a training config with a
        ``generator`` entry."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise HsynexError("generator config not found", path) from None
        except (OSError, json.JSONDecodeError) as err:
            raise HsynexError(f"cannot read generator config ({err})", path) from None
        if not isinstance(d, dict):
            raise HsynexError("generator config must be a JSON object", path)
        if isinstance(d.get("generator"), dict):
            d = d["generator"]
        return cls.from_dict(d, str(path))

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

