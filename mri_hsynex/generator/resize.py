"""Break the context shortcut both ways (hsynex, issue 13): resize the hypothalamus with its
neighbours fixed, and resize its neighbours with the hypothalamus fixed.

``RandomHypothalamusResize`` changes each hypothalamus' volume by a requested fraction (e.g.
-0.2 = 20 % smaller), of one of two kinds:

- *ventricle* kind: the boundary with the 3rd ventricle (14) moves. Shrinking gives the voxels
  closest to the ventricle to the ventricle (it widens, as in neurodegeneration); growing takes
  the ventricle voxels closest to the hypothalamus (they take the adjacent subunit).
- *ventral-DC* kind: the boundary with the side's ventral DC (28/60) moves the same way.
- *outer* kind: shrinking erodes the whole outer surface (every boundary but the one with the
  3rd ventricle: ventral DC, cisterns, optic chiasm, thalamus...) and the lost voxels become the
  side's ventral DC, as in `validate.anatomy.shrink_hypothalamus`' "vdc" atrophy; growing is
  the ventral-DC kind's. Without it, the surfaces that do not touch the ventral DC never move in
  training (28 % of what a 20 % atrophy removes from sub-08's map on the study's 1/3 mm grid).

The voxels that change are the candidates (hypothalamus voxels when shrinking, neighbour voxels
when growing) ranked by their distance (chamfer steps, ``targets`` dilation) to the other side
of the boundary, whole distance levels first and a uniform random share of the last level, so
the count is the requested one in expectation (to about sqrt(level size) voxels) and the
boundary moves in sub-voxel steps on a fine grid. A change larger than the candidates within
``max_steps`` allows is capped.

In *tied* samples (hypothalamus and ventral DC with the same intensity, ``RandomGMM``'s tie),
the ventral-DC and outer kinds would change the target with no change in the image, teaching the
network to ignore that boundary; the layer takes the tie flag and uses the ventricle kind there.

``RandomNeighbourResize`` grows or shrinks the 3rd ventricle, the ventral DCs, the thalami and
the optic chiasm by a random number of fine-voxel steps each, never touching the hypothalamus,
so the size of the context no longer predicts the size of the hypothalamus.
"""

from __future__ import annotations

import keras
from keras import ops

from .. import labels as label_tables
from .grid import seed_generator
from .morph import _is_any, _propagate
from .targets import _dilate

VENTRICLE_KIND, VENTRAL_DC_KIND, OUTER_KIND = 0, 1, 2
SIDES = (
    (label_tables.LEFT_SUBUNIT_IDS, label_tables.LEFT_VENTRAL_DC),
    (label_tables.RIGHT_SUBUNIT_IDS, label_tables.RIGHT_VENTRAL_DC),
)
# neighbour groups resized with the hypothalamus fixed (left/right partners move together)
NEIGHBOUR_GROUPS = (
    (label_tables.THIRD_VENTRICLE,),
    label_tables.VENTRAL_DC_IDS,
    (label_tables.LEFT_THALAMUS, label_tables.RIGHT_THALAMUS),
    (label_tables.OPTIC_CHIASM,),
)


def distance_levels(mask, max_steps: int):
    """Chamfer steps (B, X, Y, Z) float32 from a (B, X, Y, Z) bool ``mask``: 0 inside it, k for a
    voxel first reached by the k-th dilation (cross and cube alternating), ``max_steps + 1``
    beyond."""
    front = ops.cast(mask, "bool")
    level = ops.zeros(ops.shape(front), dtype="float32")
    for k in range(max_steps + 1):
        level = level + ops.cast(ops.logical_not(front), "float32")
        if k < max_steps:
            front = _dilate(front, cube=k % 2 == 1)
    return level


def select_nearest(candidates, level, count, uniform, max_steps: int):
    """Choose about ``count`` (B,) voxels among the bool ``candidates`` (B, X, Y, Z): the lowest
    distance ``level``s first (1..max_steps), then a share of the next level drawn with the
    ``uniform`` (B, X, Y, Z) values in [0, 1). Returns a bool mask."""
    cand = ops.cast(candidates, "float32")
    counts = [ops.sum(cand * ops.cast(ops.equal(level, float(k)), "float32"), axis=(1, 2, 3))
              for k in range(1, max_steps + 1)]
    counts = ops.stack(counts, axis=1)  # (B, K)
    cumulative = ops.cumsum(counts, axis=1)
    count = ops.convert_to_tensor(count, dtype="float32")[:, None]
    full = ops.sum(ops.cast(cumulative <= count, "float32"), axis=1)  # levels taken whole
    last = ops.minimum(full, float(max_steps - 1))  # 0-based index of the partial level
    one_hot = ops.one_hot(ops.cast(last, "int32"), max_steps)
    before = ops.sum(one_hot * (cumulative - counts), axis=1)
    in_level = ops.sum(one_hot * counts, axis=1)
    share = ops.clip((count[:, 0] - before) / ops.maximum(in_level, 1.0), 0.0, 1.0)
    bcast = (slice(None), None, None, None)
    whole = ops.less_equal(level, full[bcast])
    partial = ops.logical_and(ops.equal(level, (last + 1.0)[bcast]),
                              ops.less(uniform, share[bcast]))
    return ops.logical_and(candidates, ops.logical_or(whole, partial))


def resize_hypothalamus(labels, fraction, kind, uniform, max_steps: int = 6):
    """Change the volume of each hypothalamus of (B, X, Y, Z) int32 ``labels`` by ``fraction``
    (B, 2) (left, right; -0.2 = 20 % smaller) at its boundary with the 3rd ventricle
    (``kind`` (B,) == 0), its ventral DC (``kind`` == 1) or, shrinking, its whole outer surface
    (``kind`` == 2: every boundary but the ventricle's; the lost voxels become ventral DC);
    ``uniform`` (B, X, Y, Z) in [0, 1) picks the share of the last distance level. Only the
    hypothalamus and the ventricle or ventral DC change. A zero fraction is the identity."""
    labels = ops.convert_to_tensor(labels, dtype="int32")
    fraction = ops.convert_to_tensor(fraction, dtype="float32")
    kind = ops.convert_to_tensor(kind, dtype="int32")[:, None, None, None]
    ventricle_kind = ops.equal(kind, VENTRICLE_KIND)
    outer_kind = ops.equal(kind, OUTER_KIND)
    # the outer kind's "outside": neither hypothalamus nor the ventricle (as in the validation's
    # atrophy, where the two sides never erode each other)
    outside = ops.logical_not(ops.logical_or(
        _is_any(labels, label_tables.SUBUNIT_IDS),
        ops.equal(labels, label_tables.THIRD_VENTRICLE)))
    for side, (ids, vdc) in enumerate(SIDES):
        inside = _is_any(labels, ids)
        neighbour_id = ops.where(ventricle_kind, label_tables.THIRD_VENTRICLE, vdc)
        neighbour = ops.equal(labels, neighbour_id)
        volume = ops.sum(ops.cast(inside, "float32"), axis=(1, 2, 3))
        f = fraction[:, side]
        count = ops.round(ops.abs(f) * volume)
        # shrink: hypothalamus voxels nearest the neighbour (outer kind: nearest anything but
        # the ventricle); grow: neighbour voxels nearest it
        shrinking = (f < 0)[:, None, None, None]
        source = ops.where(shrinking, ops.where(outer_kind, outside, neighbour), inside)
        candidates = ops.where(shrinking, inside, neighbour)
        chosen = select_nearest(candidates, distance_levels(source, max_steps), count, uniform,
                                max_steps)
        subunit = _propagate(ops.where(inside, labels, 0), 2 * max_steps)
        shrunk = ops.logical_and(chosen, shrinking)
        joined = ops.logical_and(ops.logical_and(chosen, (f > 0)[:, None, None, None]),
                                 subunit > 0)
        labels = ops.where(shrunk, neighbour_id, labels)
        labels = ops.where(joined, subunit, labels)
    return labels


def resize_neighbours(labels, steps, max_steps: int = 3):
    """Grow (``steps`` > 0) or shrink (< 0) each group of ``NEIGHBOUR_GROUPS`` of (B, X, Y, Z)
    int32 ``labels`` by |steps| (B, G) chamfer steps, in order, never changing a hypothalamus
    voxel (801-810) and never growing into background. Grown voxels take the nearest group
    label; shrunk voxels the nearest label outside the group (and outside the hypothalamus).
    Zero steps are the identity."""
    labels = ops.convert_to_tensor(labels, dtype="int32")
    steps = ops.convert_to_tensor(steps, dtype="float32")
    hypothalamus = _is_any(labels, label_tables.SUBUNIT_IDS)
    bcast = (slice(None), None, None, None)
    for g, group in enumerate(NEIGHBOUR_GROUPS):
        member = _is_any(labels, group)
        s = steps[:, g][bcast]
        outside_level = distance_levels(member, max_steps)  # for growth (non-members)
        inside_level = distance_levels(ops.logical_not(member), max_steps)  # for shrinkage
        free = ops.logical_not(ops.logical_or(hypothalamus, ops.equal(labels, 0)))
        grow = ops.logical_and(ops.logical_and(free, ops.logical_not(member)),
                               ops.logical_and(outside_level <= s, s > 0))
        shrink = ops.logical_and(member, ops.logical_and(inside_level <= -s, s < 0))
        if len(group) == 1:  # one label: grown voxels take it
            group_fill = ops.full_like(labels, group[0])
        else:
            group_fill = _propagate(ops.where(member, labels, 0), 2 * max_steps)
        other = ops.logical_not(ops.logical_or(member, hypothalamus))
        other_fill = _propagate(ops.where(other, labels, 0), 2 * max_steps)
        labels = ops.where(ops.logical_and(grow, group_fill > 0), group_fill, labels)
        labels = ops.where(ops.logical_and(shrink, other_fill > 0), other_fill, labels)
    return labels


@keras.saving.register_keras_serializable(package="hsynex")
class RandomTie(keras.layers.Layer):
    """Draw, per sample, whether the hypothalamus takes the ventral DC's intensity (the tie):
    input (B, X, Y, Z) labels (for the batch size), output (B,) float32 1/0. Shared by
    ``RandomHypothalamusResize`` and ``RandomGMM`` so that tied samples never move the invisible
    boundary."""

    def __init__(self, prob: float = 0.3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int) -> dict:
        """``tie`` (B,) float32 in {0, 1}."""
        u = keras.random.uniform((batch_size,), 0.0, 1.0, seed=self.seed_generator)
        return {"tie": ops.cast(u < self.prob, "float32")}

    def call(self, labels):
        return self.sample_parameters(ops.shape(labels)[0])["tie"]

    def compute_output_spec(self, labels):
        return keras.KerasTensor((labels.shape[0],), dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "prob": self.prob, "seed": self.seed}


@keras.saving.register_keras_serializable(package="hsynex")
class RandomHypothalamusResize(keras.layers.Layer):
    """With probability ``prob`` per sample, change each hypothalamus' volume by U(-max_fraction,
    max_fraction) (independently per side) at its ventricle boundary (probability
    ``ventricle_prob``, and always in tied samples) or else at its ventral-DC boundary or (a
    share ``outer_prob`` of those) its whole outer surface. Inputs
    ``[labels (B, X, Y, Z) int32, tie (B,) float32]``; output labels."""

    def __init__(self, prob: float = 0.0, max_fraction: float = 0.25,
                 ventricle_prob: float = 0.5, max_steps: int = 6, seed: int | None = None,
                 outer_prob: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.max_fraction = float(max_fraction)
        self.ventricle_prob = float(ventricle_prob)
        self.outer_prob = float(outer_prob)
        self.max_steps = int(max_steps)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int], tie) -> dict:
        """``fraction`` (B, 2) (0 where off), ``kind`` (B,) int32 (ventricle in tied samples),
        ``uniform`` (B, X, Y, Z)."""
        sg, m = self.seed_generator, self.max_fraction
        uniform = keras.random.uniform
        fraction = uniform((batch_size, 2), -m, m, seed=sg)
        on = uniform((batch_size, 1), 0.0, 1.0, seed=sg) < self.prob
        kind = ops.cast(uniform((batch_size,), 0.0, 1.0, seed=sg) >= self.ventricle_prob,
                        "int32")
        if self.outer_prob > 0:  # (drawn only then: configs without it keep their samples)
            outer = uniform((batch_size,), 0.0, 1.0, seed=sg) < self.outer_prob
            outer = ops.logical_and(outer, ops.equal(kind, VENTRAL_DC_KIND))
            kind = ops.where(outer, OUTER_KIND, kind)
        kind = ops.where(ops.convert_to_tensor(tie) > 0.5, VENTRICLE_KIND, kind)
        return {"fraction": ops.where(on, fraction, ops.zeros_like(fraction)), "kind": kind,
                "uniform": uniform((batch_size, *shape), 0.0, 1.0, seed=sg)}

    def apply(self, labels, params: dict):
        """The deterministic half: ``resize_hypothalamus`` with given parameters."""
        return resize_hypothalamus(labels, params["fraction"], params["kind"], params["uniform"],
                                   self.max_steps)

    def call(self, inputs):
        labels, tie = inputs
        if self.prob <= 0:
            return labels
        shape = tuple(int(n) for n in labels.shape[1:4])
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0], shape, tie))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="int32")

    def get_config(self) -> dict:
        return {**super().get_config(), "prob": self.prob, "max_fraction": self.max_fraction,
                "ventricle_prob": self.ventricle_prob, "max_steps": self.max_steps,
                "seed": self.seed, "outer_prob": self.outer_prob}


@keras.saving.register_keras_serializable(package="hsynex")
class RandomNeighbourResize(keras.layers.Layer):
    """With probability ``prob`` per sample, grow or shrink each neighbour group
    (``NEIGHBOUR_GROUPS``) by an integer number of fine-voxel steps in [-max_steps, max_steps],
    the hypothalamus fixed. (B, X, Y, Z) int32 labels in and out."""

    def __init__(self, prob: float = 0.0, max_steps: int = 3, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.max_steps = int(max_steps)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int) -> dict:
        """``steps`` (B, G) float32 integers (0 where off)."""
        sg, m = self.seed_generator, self.max_steps
        raw = keras.random.uniform((batch_size, len(NEIGHBOUR_GROUPS)), -m - 0.5, m + 0.5,
                                   seed=sg)
        steps = ops.clip(ops.round(raw), -m, m)
        on = keras.random.uniform((batch_size, 1), 0.0, 1.0, seed=sg) < self.prob
        return {"steps": ops.where(on, steps, ops.zeros_like(steps))}

    def apply(self, labels, params: dict):
        """The deterministic half: ``resize_neighbours`` with given steps."""
        return resize_neighbours(labels, params["steps"], self.max_steps)

    def call(self, labels):
        if self.prob <= 0:
            return labels
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0]))

    def compute_output_spec(self, labels):
        return keras.KerasTensor(labels.shape, dtype="int32")

    def get_config(self) -> dict:
        return {**super().get_config(), "prob": self.prob, "max_steps": self.max_steps,
                "seed": self.seed}
