"""Step 4: the conditional Gaussian mixture that turns labels into an image of random contrast.

Labels map to *generation classes* (``labels.generation_class_lut``: the ten subunits share one
class, left/right partners share one). Each class draws a mean U(mean_range) and a std
U(std_range) per sample, and each voxel a Gaussian value with its class's parameters.

Background (label 0): with ``background_zero_prob`` it is exactly 0 (a skull-stripped scan), with
``background_dark_prob`` dark (means U(0, background_dark_max)), otherwise ordinary classes. It is
split into ``background_regions`` smooth random regions (argmax of smooth noise fields), each its
own class, to mimic the skull, sinus and neck tissue that crops of real scans contain where the
label map says 0. ``tie_classes`` rows ``[source, tied, p]`` give the tied label's class the
source label's parameters with probability p (little hypothalamus / ventral-DC contrast in real
scans). ``near_tie_prob``: in the other samples, the first row's tied class takes the source's
parameters with the mean moved by a relative U(near_tie_contrast) of random sign (the few-percent
contrast of real scans, which uniform means rarely give). ``low_contrast_prob``: the class means
of a sample are pulled toward their average by a factor U(low_contrast_range) (the stds are
kept), so that every tissue differs from its neighbours by a few noise sds, as in a PD-weighted
scan; with independent uniform means all of the hypothalamus' neighbours are that close in
almost no sample.
"""

from __future__ import annotations

import keras
from keras import ops

from .. import labels as label_tables
from .grid import coarse_grid_size, labels_and_tie, seed_generator, upsample_field


def generation_classes(labels, class_lut, n_label_classes: int, region_field=None):
    """Generation class (B, X, Y, Z) int32 of every voxel of ``labels`` (B, X, Y, Z) in
    [0, max_label]. ``region_field`` (B, X, Y, Z, R) splits label 0 into R regions: region 0
    keeps class 0, region r > 0 gets class ``n_label_classes + r - 1``."""
    classes = ops.cast(ops.take(class_lut, labels), "int32")
    if region_field is None or int(region_field.shape[-1]) < 2:
        return classes
    region = ops.cast(ops.argmax(region_field, axis=-1), "int32")
    background = ops.where(region == 0, 0, region + (n_label_classes - 1))
    return ops.where(labels == 0, background, classes)


def gmm_image(classes, means, stds, normal):
    """Image (B, X, Y, Z) float32 = means[b, class] + stds[b, class] * normal.

    ``classes`` (B, X, Y, Z) int32, ``means``/``stds`` (B, K), ``normal`` (B, X, Y, Z) standard
    normal values (pass zeros for the noise-free class means)."""
    classes = ops.convert_to_tensor(classes)
    shape = ops.shape(classes)
    flat = ops.reshape(classes, (shape[0], -1))
    mu = ops.reshape(ops.take_along_axis(means, flat, axis=1), shape)
    sigma = ops.reshape(ops.take_along_axis(stds, flat, axis=1), shape)
    return mu + sigma * normal


@keras.saving.register_keras_serializable(package="hsynex")
class RandomGMM(keras.layers.Layer):
    """Labels (B, X, Y, Z) int32 in [0, max_label] -> image (B, X, Y, Z) float32 (0-250-ish)."""

    def __init__(self, max_label: int = 830, mean_range=(0.0, 250.0), std_range=(0.0, 35.0),
                 share_left_right: bool = True, background_zero_prob: float = 0.2,
                 background_dark_prob: float = 0.2, background_dark_max: float = 20.0,
                 background_regions: int = 4, background_region_scale: float = 0.08,
                 voxel_ratio: float = 1.0, tie_classes=((28, 801, 0.3),),
                 near_tie_prob: float = 0.0, near_tie_contrast=(0.05, 0.3),
                 low_contrast_prob: float = 0.0, low_contrast_range=(0.1, 0.4),
                 noise_scale: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_label = int(max_label)
        self.mean_range = tuple(float(v) for v in mean_range)
        self.std_range = tuple(float(v) for v in std_range)
        self.share_left_right = bool(share_left_right)
        self.background_zero_prob = float(background_zero_prob)
        self.background_dark_prob = float(background_dark_prob)
        self.background_dark_max = float(background_dark_max)
        self.background_regions = int(background_regions)
        self.background_region_scale = float(background_region_scale)
        self.voxel_ratio = float(voxel_ratio)  # output voxel / input voxel (for region sizes)
        self.tie_classes = tuple((int(a), int(b), float(p)) for a, b, p in tie_classes)
        self.near_tie_prob = float(near_tie_prob)
        self.near_tie_contrast = tuple(float(v) for v in near_tie_contrast)
        self.low_contrast_prob = float(low_contrast_prob)
        self.low_contrast_range = tuple(float(v) for v in low_contrast_range)
        # multiplies the per-voxel noise: s^1.5 on an s-times finer grid keeps the class std
        # after s x s x s pooling what it is at the output voxel
        self.noise_scale = float(noise_scale)
        self.seed = seed
        self.seed_generator = seed_generator(seed)
        lut = label_tables.generation_class_lut(self.max_label, self.share_left_right)
        self.n_label_classes = int(lut.max()) + 1
        self.n_classes = self.n_label_classes + self.background_regions - 1
        self.class_lut = ops.convert_to_tensor(lut, dtype="int32")
        self._ties = [(int(lut[a]), int(lut[b]), p) for a, b, p in self.tie_classes
                      if a <= self.max_label and b <= self.max_label and lut[a] != lut[b]]
        background = [0] + list(range(self.n_label_classes, self.n_classes))
        mask = [0.0] * self.n_classes
        for k in background:
            mask[k] = 1.0
        self.background_mask = ops.convert_to_tensor(mask, dtype="float32")

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int], tie=None) -> dict:
        """``means``/``stds`` (B, K) per generation class (background modes and ties applied),
        ``regions`` (B, *shape, R) smooth noise or None, ``normal`` (B, *shape). ``tie`` (B,)
        float 1/0, when given, decides the first ``tie_classes`` row instead of its own draw
        (``resize.RandomTie``: shared with the hypothalamus resizing)."""
        b, k, sg = batch_size, self.n_classes, self.seed_generator
        uniform = keras.random.uniform
        means = uniform((b, k), *self.mean_range, seed=sg)
        stds = uniform((b, k), *self.std_range, seed=sg)
        for row, (source, tied, p) in enumerate(self._ties):
            is_tied = uniform((b, 1), 0.0, 1.0, seed=sg) < p
            if row == 0 and tie is not None:
                is_tied = ops.reshape(ops.convert_to_tensor(tie) > 0.5, (-1, 1))
            column = ops.one_hot(ops.convert_to_tensor([tied]), k) > 0.5  # (1, K)
            if row == 0 and self.near_tie_prob > 0:  # untied: a small contrast instead
                near = (uniform((b, 1), 0.0, 1.0, seed=sg) < self.near_tie_prob) & ~is_tied
                sign = ops.where(uniform((b, 1), 0.0, 1.0, seed=sg) < 0.5, -1.0, 1.0)
                contrast = sign * uniform((b, 1), *self.near_tie_contrast, seed=sg)
                moved = means[:, source:source + 1] * (1.0 + contrast)
                means = ops.where(near & column, moved, means)
                stds = ops.where(near & column, stds[:, source:source + 1], stds)
            means = ops.where(is_tied & column, means[:, source:source + 1], means)
            stds = ops.where(is_tied & column, stds[:, source:source + 1], stds)
        if self.low_contrast_prob > 0:  # every class toward the sample's average mean
            low = uniform((b, 1), 0.0, 1.0, seed=sg) < self.low_contrast_prob
            factor = uniform((b, 1), *self.low_contrast_range, seed=sg)
            centre = ops.mean(means, axis=1, keepdims=True)
            means = ops.where(low, centre + factor * (means - centre), means)
        mode = uniform((b, 1), 0.0, 1.0, seed=sg)
        zero = ops.cast(mode < self.background_zero_prob, "float32")
        dark = ops.cast(mode < self.background_zero_prob + self.background_dark_prob,
                        "float32") - zero
        bg = self.background_mask[None]
        dark_max = self.background_dark_max
        dark_means = uniform((b, k), 0.0, dark_max, seed=sg)
        dark_stds = uniform((b, k), 0.0, min(self.std_range[1], dark_max / 2.0), seed=sg)
        means = means * (1.0 - bg * (zero + dark)) + bg * dark * dark_means
        stds = stds * (1.0 - bg * (zero + dark)) + bg * dark * dark_stds
        regions = None
        if self.background_regions > 1:
            grid = tuple(coarse_grid_size(n, self.voxel_ratio, 1.0, self.background_region_scale)
                         for n in shape)
            coarse = keras.random.normal((b, *grid, self.background_regions), seed=sg)
            regions = upsample_field(coarse, shape)
        normal = keras.random.normal((b, *shape), seed=sg)
        return {"means": means, "stds": stds, "regions": regions, "normal": normal}

    def apply(self, labels, params: dict):
        """The deterministic half: the image of ``labels`` with given parameters."""
        classes = generation_classes(labels, self.class_lut, self.n_label_classes,
                                     params["regions"])
        return gmm_image(classes, params["means"], params["stds"],
                         params["normal"] * self.noise_scale)

    def call(self, inputs):
        labels, tie = labels_and_tie(inputs)
        shape = tuple(int(n) for n in labels.shape[1:4])
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0], shape, tie))

    def compute_output_spec(self, inputs):
        labels = labels_and_tie(inputs)[0]
        return keras.KerasTensor(labels.shape, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            max_label=self.max_label, mean_range=list(self.mean_range),
            std_range=list(self.std_range), share_left_right=self.share_left_right,
            background_zero_prob=self.background_zero_prob,
            background_dark_prob=self.background_dark_prob,
            background_dark_max=self.background_dark_max,
            background_regions=self.background_regions,
            background_region_scale=self.background_region_scale,
            voxel_ratio=self.voxel_ratio,
            tie_classes=[list(t) for t in self.tie_classes], seed=self.seed)
        if self.near_tie_prob > 0:
            config.update(near_tie_prob=self.near_tie_prob,
                          near_tie_contrast=list(self.near_tie_contrast))
        if self.low_contrast_prob > 0:
            config.update(low_contrast_prob=self.low_contrast_prob,
                          low_contrast_range=list(self.low_contrast_range))
        if self.noise_scale != 1.0:
            config["noise_scale"] = self.noise_scale
        return config
