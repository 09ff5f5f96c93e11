"""Step 7: random acquisition resolution and slice thickness, back at the output voxel size.

Per sample: with ``prob_min_res`` the image keeps the output resolution; otherwise it is
acquired anisotropically (with ``prob_aniso``: one random axis at U(r0, max_res_aniso) mm, the
others at r0) or isotropically at U(r0, max_res_iso) mm, r0 = output voxel size. The slice
thickness t is U(r0, resolution) per axis.

Per axis, "Gaussian blur (sigma = 0.75 sqrt(t^2 - r0^2) / r0 voxels, i.e. the extra blur a
slice of thickness t adds to a voxel of r0) -> sample at low-resolution positions
phase + j f (f = resolution / r0, linear) -> linear interpolation back to the output grid"
is one N x N matrix built in the graph from (f, sigma, phase); the volume is multiplied by one
matrix per axis. A random f therefore never changes a tensor shape. (SynthSeg uses
sigma = 0.75 t / r0 and 0.5 voxel at r0; ours is 0 at r0 so an undegraded axis is untouched.)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .grid import apply_per_axis, seed_generator


def resolution_matrix(n: int, factor, sigma, phase):
    """(B, n, n) per-sample matrices: blur with ``sigma`` (B,) voxels, sample at positions
    ``phase * factor + j * factor`` (``factor`` (B,) >= 1, ``phase`` (B,) in [0, 1)), and
    interpolate back linearly to the n output voxels (edge values held at the borders)."""
    idx = ops.cast(ops.arange(n), "float32")
    sigma = ops.maximum(sigma, 1e-2)[:, None, None]
    blur = ops.exp(-0.5 * ops.square((idx[:, None] - idx[None, :])[None] / sigma))
    blur = blur / ops.sum(blur, axis=-1, keepdims=True)  # (B, n, n): row i = output voxel i
    f = factor[:, None]
    offset = (phase * ops.minimum(factor, n - 1.0))[:, None]  # first sample inside the crop
    low = offset + idx[None, :] * f  # (B, n) low-res sample positions (output-voxel units)
    last = ops.floor((n - 1.0 - offset) / f)  # (B, 1) index of the last sample inside
    valid = ops.cast(idx[None, :] <= last, "float32")
    down = ops.maximum(0.0, 1.0 - ops.abs(low[:, :, None] - idx[None, None, :]))
    down = down * valid[:, :, None]  # (B, n_low, n)
    # (B, n): low-resolution index of each output voxel
    u = ops.minimum(ops.maximum((idx[None, :] - offset) / f, 0.0), last)
    up = ops.maximum(0.0, 1.0 - ops.abs(u[:, :, None] - idx[None, None, :]))  # (B, n, n_low)
    return ops.matmul(up, ops.matmul(down, blur))


def degrade_resolution(image, resolution_mm, thickness_mm, phase, blur_scale,
                       voxel_mm: float):
    """Resample (B, X, Y, Z) ``image`` at ``voxel_mm`` as if acquired at ``resolution_mm``
    (B, 3) with slice thickness ``thickness_mm`` (B, 3); ``phase`` (B, 3) in [0, 1) shifts the
    low-resolution grid, ``blur_scale`` (B, 3) multiplies the blur sigma."""
    image = ops.convert_to_tensor(image)
    factor = ops.maximum(ops.convert_to_tensor(resolution_mm) / voxel_mm, 1.0)
    extra = ops.sqrt(ops.maximum(ops.square(thickness_mm) - voxel_mm**2, 0.0))
    sigma = 0.75 * extra / voxel_mm * blur_scale
    phase = phase * ops.cast(factor > 1.0, "float32")
    sizes = [int(n) for n in image.shape[1:4]]
    if len(set(sizes)) == 1:  # cubic crop: the three axes' matrices in one batch of 3B
        mats = resolution_matrix(sizes[0], ops.reshape(factor, (-1,)), ops.reshape(sigma, (-1,)),
                                 ops.reshape(phase, (-1,)))
        mats = ops.reshape(mats, (-1, 3, sizes[0], sizes[0]))
        return apply_per_axis(image, mats[:, 0], mats[:, 1], mats[:, 2])
    mats = [resolution_matrix(sizes[a], factor[:, a], sigma[:, a], phase[:, a])
            for a in range(3)]
    return apply_per_axis(image, *mats)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomResolution(keras.layers.Layer):
    """Mimic a random acquisition resolution / slice thickness on (B, X, Y, Z) float32 images
    at ``voxel_mm`` (isotropic output voxel size)."""

    def __init__(self, voxel_mm: float = 1.0, prob_min_res: float = 0.05,
                 prob_aniso: float = 0.9, max_res_iso: float = 4.0, max_res_aniso: float = 9.0,
                 random_thickness: bool = True, blur_range: float = 1.03,
                 prob_blur_only: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.voxel_mm = float(voxel_mm)
        self.prob_min_res = float(prob_min_res)
        self.prob_aniso = float(prob_aniso)
        self.max_res_iso = float(max_res_iso)
        self.max_res_aniso = float(max_res_aniso)
        self.random_thickness = bool(random_thickness)
        self.blur_range = float(blur_range)
        # hsynex: with this probability the sample keeps the output resolution but is blurred
        # (thickness U(r0, max_res_iso) per axis): a blur that comes without a downsampling, as
        # in scans resampled to 1 mm or reconstructed with smoothing
        self.prob_blur_only = float(prob_blur_only)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int) -> dict:
        """``resolution_mm``, ``thickness_mm``, ``phase``, ``blur_scale``: each (B, 3)."""
        b, sg, r0 = batch_size, self.seed_generator, self.voxel_mm
        uniform = keras.random.uniform
        iso = uniform((b, 1), r0, max(r0, self.max_res_iso), seed=sg)
        aniso_res = uniform((b, 1), r0, max(r0, self.max_res_aniso), seed=sg)
        axis = ops.cast(ops.floor(uniform((b,), 0.0, 3.0, seed=sg)), "int32")
        one_axis = ops.one_hot(ops.minimum(axis, 2), 3)
        aniso = r0 + one_axis * (aniso_res - r0)
        u = uniform((b, 1), 0.0, 1.0, seed=sg)
        res = ops.where(uniform((b, 1), 0.0, 1.0, seed=sg) < self.prob_aniso, aniso,
                        iso * ops.ones((1, 3)))
        res = ops.where(u < self.prob_min_res, r0 * ops.ones((b, 3)), res)
        if self.random_thickness:
            thickness = r0 + uniform((b, 3), 0.0, 1.0, seed=sg) * (res - r0)
        else:
            thickness = res
        log_b = math.log(max(self.blur_range, 1.0))
        blur = ops.exp(uniform((b, 3), -log_b, log_b, seed=sg)) if log_b > 0 \
            else ops.ones((b, 3))
        phase = uniform((b, 3), 0.0, 1.0, seed=sg)
        if self.prob_blur_only > 0:  # extra draws only when on: the default stream is unchanged
            blur_only = uniform((b, 1), 0.0, 1.0, seed=sg) < self.prob_blur_only
            blur_thickness = uniform((b, 3), r0, max(r0, self.max_res_iso), seed=sg)
            res = ops.where(blur_only, r0 * ops.ones((b, 3)), res)
            thickness = ops.where(blur_only, blur_thickness, thickness)
        return {"resolution_mm": res, "thickness_mm": thickness, "phase": phase,
                "blur_scale": blur}

    def apply(self, image, params: dict):
        """The deterministic half: ``degrade_resolution`` with given parameters."""
        return degrade_resolution(image, params["resolution_mm"], params["thickness_mm"],
                                  params["phase"], params["blur_scale"], self.voxel_mm)

    def call(self, image):
        return self.apply(image, self.sample_parameters(ops.shape(image)[0]))

    def compute_output_spec(self, image):
        return keras.KerasTensor(image.shape, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(voxel_mm=self.voxel_mm, prob_min_res=self.prob_min_res,
                      prob_aniso=self.prob_aniso, max_res_iso=self.max_res_iso,
                      max_res_aniso=self.max_res_aniso, random_thickness=self.random_thickness,
                      blur_range=self.blur_range, seed=self.seed)
        if self.prob_blur_only > 0:
            config["prob_blur_only"] = self.prob_blur_only
        return config
