"""hsynex: contrast- and resolution-agnostic segmentation of the hypothalamus and its subunits.

Importing this package is cheap: nothing here imports keras, tensorflow or torch. Heavy
modules are imported inside the functions that need them (see ``mri_hsynex.backend``).
"""

__version__ = "0.1.0"
