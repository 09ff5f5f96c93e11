"""Step 1-2 of the method: random affine + elastic deformation, fused with the crop.

The deformed coordinate map is built only for the output crop grid and the labels are gathered
from the full label map with one nearest-neighbour ``map_coordinates``: a 256^3 map is never
warped as a whole.

Coordinates (RAS voxel axes): output voxel ``v`` of an ``n``-voxel axis sits at
``p = (v - (n-1)/2) * output_voxel_mm`` (mm, about the crop centre). It is mapped to
``q = A p`` (A = rotation . shear . scaling) plus the elastic displacement ``e(v)`` (input
voxels), and read at input voxel ``start + (n-1)/2 * r + q / input_voxel_mm + e(v)`` with
``r = output_voxel_mm / input_voxel_mm`` and ``start = round(center + shift - (n-1)/2 * r)``
(``shift`` = crop jitter + translation, in input voxels). With A = I and e = 0 that is
``start + v * r``: an exact crop of the label map (every ``r``-th voxel).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .grid import coarse_grid_size, seed_generator, upsample_field


def rotation_matrices(angles_deg):
    """(B, 3, 3) rotation matrices R = Rz . Ry . Rx for (B, 3) angles in degrees about the
    x, y, z axes."""
    a = angles_deg * (math.pi / 180.0)
    c, s = ops.cos(a), ops.sin(a)
    one, zero = ops.ones_like(c[:, 0]), ops.zeros_like(c[:, 0])

    def mat(rows):
        return ops.stack([ops.stack(r, axis=-1) for r in rows], axis=-2)

    rx = mat([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = mat([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return ops.matmul(rz, ops.matmul(ry, rx))


def affine_matrices(rotation_deg, scaling, shearing):
    """(B, 3, 3) linear part A = R . Sh . S from (B, 3) rotations (degrees), (B, 3) scale factors
    and (B, 6) shears (off-diagonal terms xy, xz, yx, yz, zx, zy of Sh = I + shears)."""
    zero = ops.zeros_like(scaling[:, 0])
    one = ops.ones_like(zero)
    sh = shearing
    shear = ops.stack([
        ops.stack([one, sh[:, 0], sh[:, 1]], axis=-1),
        ops.stack([sh[:, 2], one, sh[:, 3]], axis=-1),
        ops.stack([sh[:, 4], sh[:, 5], one], axis=-1),
    ], axis=-2)
    scale = scaling[:, :, None] * ops.eye(3, dtype=scaling.dtype)[None]
    return ops.matmul(rotation_matrices(rotation_deg), ops.matmul(shear, scale))


def crop_coordinates(center, shift_vox, affine, displacement,
                     output_shape: tuple[int, int, int], output_voxel_mm: float,
                     input_voxel_mm: float):
    """Input-voxel coordinates (B, 3, n0, n1, n2) of every output voxel.

    ``center`` and ``shift_vox`` (B, 3) are input voxels, ``affine`` (B, 3, 3) acts on mm
    about the crop centre, ``displacement`` (B, n0, n1, n2, 3) is in input voxels (or None).
    """
    ratio = output_voxel_mm / input_voxel_mm
    half = ops.convert_to_tensor([(n - 1) / 2.0 for n in output_shape], dtype="float32")
    start = ops.round(center + shift_vox - half[None] * ratio)
    origin = start + half[None] * ratio  # (B, 3): input voxel of the crop centre
    axes = [(ops.cast(ops.arange(n), "float32") - (n - 1) / 2.0) * output_voxel_mm
            for n in output_shape]
    px = axes[0][:, None, None]
    py = axes[1][None, :, None]
    pz = axes[2][None, None, :]
    coords = []
    for i in range(3):
        a = affine[:, i, :] / input_voxel_mm  # (B, 3)
        q = (a[:, 0, None, None, None] * px[None] + a[:, 1, None, None, None] * py[None]
             + a[:, 2, None, None, None] * pz[None])
        q = q + origin[:, i, None, None, None]
        if displacement is not None:
            q = q + displacement[..., i]
        coords.append(q)
    return ops.stack(coords, axis=1)


def gather_labels(labels, coords, max_label: int):
    """Nearest-neighbour labels (B, n0, n1, n2) int32 of ``labels`` (B, X, Y, Z) at ``coords``
    (B, 3, n0, n1, n2); outside the map, and labels outside [0, max_label], give 0."""
    out = []
    for b in range(int(labels.shape[0])):
        c = coords[b]
        out.append(ops.image.map_coordinates(labels[b], [c[0], c[1], c[2]], order=0,
                                             fill_mode="constant", fill_value=0))
    out = ops.cast(ops.stack(out, axis=0), "int32")
    return ops.where((out < 0) | (out > max_label), 0, out)


def deform_and_crop(labels, center, params: dict, output_shape: tuple[int, int, int],
                    output_voxel_mm: float, input_voxel_mm: float, max_label: int):
    """Apply sampled spatial parameters (see ``RandomDeformCrop.sample_parameters``): labels
    (B, X, Y, Z) int32 + centre (B, 3) input voxels -> cropped, deformed labels (B, n0, n1, n2)."""
    affine = affine_matrices(params["rotation_deg"], params["scaling"], params["shearing"])
    shift = params["shift_mm"] / input_voxel_mm
    field = params.get("elastic")
    displacement = None if field is None else upsample_field(field, output_shape)
    coords = crop_coordinates(ops.cast(center, "float32"), shift, affine, displacement,
                              output_shape, output_voxel_mm, input_voxel_mm)
    return gather_labels(labels, coords, max_label)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomDeformCrop(keras.layers.Layer):
    """Random affine + elastic deformation and crop of a label map, around a given centre.

    Inputs ``[labels (B, X, Y, Z) int32, center (B, 3) float32 input voxels]``; output
    (B, *output_shape) int32 labels at ``output_voxel_mm``.
    """

    def __init__(self, output_shape=(64, 64, 64), output_voxel_mm: float = 1.0,
                 input_voxel_mm: float = 1.0, max_label: int = 830,
                 scaling_bounds: float = 0.2, rotation_bounds_deg: float = 15.0,
                 shearing_bounds: float = 0.012, translation_bounds_mm: float = 0.0,
                 crop_jitter_mm: float = 8.0, nonlin_std: float = 4.0,
                 nonlin_scale: float = 0.04, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.out_shape = tuple(int(n) for n in output_shape)
        self.output_voxel_mm = float(output_voxel_mm)
        self.input_voxel_mm = float(input_voxel_mm)
        self.max_label = int(max_label)
        self.scaling_bounds = float(scaling_bounds)
        self.rotation_bounds_deg = float(rotation_bounds_deg)
        self.shearing_bounds = float(shearing_bounds)
        self.translation_bounds_mm = float(translation_bounds_mm)
        self.crop_jitter_mm = float(crop_jitter_mm)
        self.nonlin_std = float(nonlin_std)
        self.nonlin_scale = float(nonlin_scale)
        self.seed = seed
        self.seed_generator = seed_generator(seed)
        self.grid_shape = tuple(coarse_grid_size(n, self.output_voxel_mm, self.input_voxel_mm,
                                                 self.nonlin_scale) for n in self.out_shape)

    def sample_parameters(self, batch_size: int) -> dict:
        """Random parameters for ``batch_size`` samples: rotation_deg (B, 3), scaling (B, 3),
        shearing (B, 6), shift_mm (B, 3) (jitter + translation), elastic (B, g0, g1, g2, 3)
        (input voxels) or None when ``nonlin_std`` is 0."""
        uniform, sg = keras.random.uniform, self.seed_generator
        b = batch_size
        sb, rb = self.scaling_bounds, self.rotation_bounds_deg
        params = {
            "rotation_deg": uniform((b, 3), -rb, rb, seed=sg) if rb > 0 else ops.zeros((b, 3)),
            "scaling": uniform((b, 3), 1.0 - sb, 1.0 + sb, seed=sg) if sb > 0
            else ops.ones((b, 3)),
            "shearing": uniform((b, 6), -self.shearing_bounds, self.shearing_bounds, seed=sg)
            if self.shearing_bounds > 0 else ops.zeros((b, 6)),
        }
        shift = ops.zeros((b, 3))
        if self.crop_jitter_mm > 0:
            shift = shift + uniform((b, 3), -self.crop_jitter_mm, self.crop_jitter_mm, seed=sg)
        if self.translation_bounds_mm > 0:
            t = self.translation_bounds_mm
            shift = shift + uniform((b, 3), -t, t, seed=sg)
        params["shift_mm"] = shift
        params["elastic"] = None
        if self.nonlin_std > 0:
            std = uniform((b, 1, 1, 1, 1), 0.0, self.nonlin_std, seed=sg)
            params["elastic"] = std * keras.random.normal((b, *self.grid_shape, 3), seed=sg)
        return params

    def apply(self, inputs, params: dict):
        """The deterministic half: ``deform_and_crop`` with given parameters."""
        labels, center = inputs
        return deform_and_crop(labels, center, params, self.out_shape, self.output_voxel_mm,
                               self.input_voxel_mm, self.max_label)

    def call(self, inputs):
        return self.apply(inputs, self.sample_parameters(ops.shape(inputs[0])[0]))

    def compute_output_spec(self, inputs):
        labels = inputs[0]
        return keras.KerasTensor((labels.shape[0], *self.out_shape), dtype="int32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            output_shape=list(self.out_shape), output_voxel_mm=self.output_voxel_mm,
            input_voxel_mm=self.input_voxel_mm, max_label=self.max_label,
            scaling_bounds=self.scaling_bounds, rotation_bounds_deg=self.rotation_bounds_deg,
            shearing_bounds=self.shearing_bounds,
            translation_bounds_mm=self.translation_bounds_mm,
            crop_jitter_mm=self.crop_jitter_mm, nonlin_std=self.nonlin_std,
            nonlin_scale=self.nonlin_scale, seed=self.seed)
        return config
