"""Inference: ``Segmenter`` (networks loaded once) -> ``SegmentationResult`` -> outputs.

Importing this package does not import keras; ``Segmenter()`` configures the backend first.

    seg = Segmenter(model_dir=None, threads=None, cpu=False, seed=0)
    result = seg.segment(image_path, aseg_path=None, resample="native")
    result.write(OutputPaths(seg=..., post=None, vol_csv=None, stats=None, qc=None),
                 subject="name", cmdline="...")
"""

from .outputs import OutputPaths
from .pipeline import Segmenter
from .result import SegmentationResult

__all__ = ["OutputPaths", "Segmenter", "SegmentationResult"]
