"""Same-seed pairs: two samples with identical deformation, contrast, bias, resolution and noise
that differ only in the hypothalamus' size (issue 13: the paired-sensitivity probe and the
optional pairs loss).

Every generator layer splits *sample parameters* from *apply them*, so a pair is made by drawing
each layer's parameters once and applying them to both label maps. Runs eagerly (a Python loop
over the layers of ``builder.generator_layers``), not as one Keras graph.
"""

from __future__ import annotations

from keras import ops

from .builder import finish_image_and_targets, generator_layers, hypothalamus_resize
from .config import GeneratorConfig
from .resize import RandomTie


def _tiled(params: dict, n: int) -> dict:
    """Every tensor of ``params`` repeated ``n`` times along the batch axis (None kept)."""
    return {k: (None if v is None else ops.repeat(v, n, axis=0)) for k, v in params.items()}


class PairRenderer:
    """Renders pairs of samples of ``cfg`` that differ only in the hypothalamus' size.

    ``render(labels, center, fractions, kind)``: labels (1, X, Y, Z) int32, centre (1, 3) input
    voxels, ``fractions`` a list of per-sample (left, right) relative volume changes (e.g.
    ``[(0, 0), (-0.2, -0.2)]``), ``kind`` 0 (ventricle), 1 (ventral DC) or 2 (outer surface;
    1 and 2 replaced by the ventricle kind in tied samples unless ``respect_tie`` is False;
    likewise the morph), or None for the kind the generator would draw. Returns the generator's
    outputs for the len(fractions) samples, plus "fine_labels" and "tie".
    """

    def __init__(self, cfg: GeneratorConfig, seed: int | None = 0):
        self.cfg = cfg
        self.layers = generator_layers(cfg, seed)
        resize = self.layers["resize"]
        if resize is None:  # the probe on a config without random resizing
            resize = hypothalamus_resize(cfg, 1.0, None if seed is None else seed + 8)
        self.resize = resize
        self.tie_layer = tie_layer = self.layers["tie"]
        if tie_layer is None and cfg.tie_classes:  # the tie drawn here, given to the GMM
            self.tie_layer = RandomTie(cfg.tie_classes[0][2],
                                       seed=None if seed is None else seed + 7, name="tie")

    def render(self, labels, center, fractions, kind: int | None = None,
               respect_tie: bool = True, tie_value: float | None = None) -> dict:
        """The samples (see the class docstring); ``tie_value`` 0 or 1 forces the tie."""
        L, cfg = self.layers, self.cfg
        n = len(fractions)
        labels = ops.convert_to_tensor(labels, "int32")
        center = ops.convert_to_tensor(center, "float32")
        fine = L["deform_crop"].apply([labels, center], L["deform_crop"].sample_parameters(1))
        fine = L["flip"].apply(fine, L["flip"].sample_parameters(1))
        tie = (self.tie_layer.sample_parameters(1)["tie"] if self.tie_layer is not None
               else ops.zeros((1,)))
        if tie_value is not None:
            tie = ops.full((1,), float(tie_value), dtype="float32")
        shape_tie = tie if respect_tie else ops.zeros((1,))  # what the shape changes respect
        fine = L["morph"]([fine, shape_tie])
        if L["neighbours"] is not None:
            fine = L["neighbours"].apply(fine, L["neighbours"].sample_parameters(1))
        if L["csf"] is not None:  # never touches labelled voxels: the resize below is unaffected
            fine = L["csf"].apply(fine, L["csf"].sample_parameters(1))
        shape = tuple(int(s) for s in fine.shape[1:4])
        params = self.resize.sample_parameters(1, shape, shape_tie)
        if kind is not None:
            forced = ops.convert_to_tensor([int(kind)], "int32")
            params["kind"] = (ops.where(tie > 0.5, 0, forced) if respect_tie else forced)
        params = _tiled(params, n)
        params["fraction"] = ops.convert_to_tensor(fractions, "float32")
        fine = self.resize.apply(ops.repeat(fine, n, axis=0), params)
        gmm_params = _tiled(L["gmm"].sample_parameters(1, shape, tie), n)
        image = L["gmm"].apply(fine, gmm_params)
        if L["pool"] is not None:
            image = L["pool"](image)
        coarse = tuple(int(s) for s in image.shape[1:4])
        image = L["bias"].apply(image, _tiled(L["bias"].sample_parameters(1, coarse), n))
        image = L["intensity"].apply(image,
                                     _tiled(L["intensity"].sample_parameters(1, coarse), n))
        image = L["resolution"].apply(image, _tiled(L["resolution"].sample_parameters(1), n))
        if L["rician"] is not None:
            image = L["rician"].apply(image, _tiled(L["rician"].sample_parameters(1, coarse), n))
        if L["cut"] is not None:  # one plane, placed per sample under its own hypothalamus
            coarse_labels = fine if L["labels_out"] is None else L["labels_out"](fine)
            image = L["cut"].apply([image, coarse_labels],
                                   _tiled(L["cut"].sample_parameters(1), n))
        finished = dict(L)
        for step in ("pool", "bias", "intensity", "resolution", "rician", "cut"):
            finished[step] = None  # applied above with shared parameters
        out = finish_image_and_targets(finished, cfg, image, fine)
        out["fine_labels"] = fine
        out["tie"] = tie
        return out
