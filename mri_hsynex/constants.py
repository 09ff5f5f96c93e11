"""Output file names and defaults: the one place each of them is defined."""

from __future__ import annotations

# --- FreeSurfer subject layout (mri_segment_hypothalamus_synex) --------------------------------
TOOL_NAME = "hypothalamic_subunits.synex"
SUBJECT_INPUTS = ("mri/norm.mgz", "mri/T1.mgz", "mri/orig.mgz")  # first one found is used
SUBJECT_ASEG = "mri/aseg.mgz"
SUBJECT_ASEG_STATS = "stats/aseg.stats"
SUBJECT_SEG = "mri/hypothalamic_subunits_seg.synex.v1.mgz"
SUBJECT_POSTERIORS = "mri/hypothalamic_subunits_posteriors.synex.v1.mgz"
SUBJECT_VOLUMES = "mri/hypothalamic_subunits_volumes.synex.v1.csv"
SUBJECT_STATS = "stats/hypothalamic_subunits.synex.v1.stats"
SUBJECT_QC = "qc/hypothalamic_subunits.synex.v1.png"
SUBJECT_LOG = "scripts/hypothalamic_subunits.synex.log"
SUBJECT_ERROR_FLAG = "scripts/recon-all.error"
SUBJECT_LOCK = "scripts/IsRunning.hypothalamic_subunits.synex"
SUBJECT_HARDFAILURE = "scripts/hypothalamic_subunits.synex.hardfailure.txt"

# --- Output names of `mri_hsynex segment` for a batch (folder outputs) --------------------------
BATCH_SEG_SUFFIX = ".hypothalamic_subunits_seg.synex.mgz"
BATCH_POST_SUFFIX = ".hypothalamic_subunits_posteriors.synex.mgz"
BATCH_QC_SUFFIX = ".hypothalamic_subunits.synex.png"
SIDECAR_SUFFIX = ".json"  # written next to SEG: seg.mgz -> seg.json

# --- Shipped model ------------------------------------------------------------------------------
MODELS_ENV = "HSYNEX_MODELS"  # overrides the package's models/ folder
LOCALISER_FILE = "localiser.keras"
STAGE1_FILE = "stage1.keras"
STAGE2_FILE = "stage2.keras"
MODEL_SETTINGS_FILE = "model.json"  # voxel sizes, crop shapes, label tables of the shipped nets

# --- Defaults -----------------------------------------------------------------------------------
DEFAULT_BACKEND = "tensorflow"  # the design card's default; torch is the fastest on CPU
STAGE_VOXEL_MM = 1.0  # working voxel size of stages 1 and 2
STAGE_CROP = 64  # training crop of stages 1 and 2 (voxels, per axis)
LOCALISER_VOXEL_MM = 3.0  # working voxel size of the localiser
LOCALISER_CROP = 64  # training crop of the localiser (voxels, per axis) = 192 mm
# soft volumes counted by the image's partial volume (predict/pvc.py, issue 13) unless model.json
# says "partial_volume": false or the user asks for --no-pv
PARTIAL_VOLUME = True
VENTRAL_DC_DILATION_MM = 3.0  # ventral-DC(+3rd ventricle) mask dilation used to mask out FPs
# beyond that dilation, up to this far from the region, a labelled blob that continues one inside
# it is kept (predict/postprocess.anatomical_mask): a region that misses part of the structure (a
# brain mask cut under it) must not cut the structure
MASK_REACH_MM = 9.0
MAX_VOXEL_MM = 20.0  # a voxel larger than this is not an MRI we can segment
MAX_VOXELS = 1024**3  # refuse volumes larger than this before allocating them
