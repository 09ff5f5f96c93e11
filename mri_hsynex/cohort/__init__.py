"""Cohort work on FreeSurfer subjects: the recon-all-style module per subject, the parallel
cohort runner, the stats table and group comparisons.

Importing this package is cheap; the modules import numpy/pandas/dask/keras only when used.
"""
