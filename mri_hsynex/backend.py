"""Choose the Keras backend and thread counts *before* keras is first imported."""

from __future__ import annotations

import os
import sys

from .constants import DEFAULT_BACKEND


def configure(threads: int | None = None, cpu: bool = False) -> str:
    """Set ``KERAS_BACKEND`` (default: tensorflow), thread counts and, with ``cpu``, hide GPUs.

    Must run before ``import keras``; returns the backend name. ``threads`` <= 0 or None keeps
    the library defaults.
    """
    os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if threads and threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ[var] = str(threads)
    backend = os.environ["KERAS_BACKEND"]
    if "keras" in sys.modules:
        return backend
    if threads and threads > 0 and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    if threads and threads > 0 and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(threads, 2)))
    return backend
