"""Domain-randomisation generator: label maps in, training images of random contrast and
resolution out (SynthSeg-style), as Keras 3 layers composed in the order of the method.

Importing this package does not import keras: the layers are imported by ``build_generator``.
"""

from .builder import build_generator, import_layers
from .config import GeneratorConfig
from .data import LabelMapSource

__all__ = ["GeneratorConfig", "LabelMapSource", "build_generator", "import_layers"]
