"""The validation report (``mri_hsynex validate``): synthetic test images of named contrasts and
slice thicknesses, simulated atrophy, and the measurements written to ``docs/validation.md``.

Evaluation code only: plain NumPy/SciPy, nothing here is used for training.
"""
