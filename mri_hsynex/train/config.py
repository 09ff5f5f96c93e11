"""Training configuration (JSON): which network, its architecture, the generator, the schedule."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import HsynexError

NETWORKS = ("cascade", "localiser", "stage1")


KEPT_DIR = "kept"  # run-folder subfolder of the checkpoints kept every ``keep_every`` steps


def kept_name(step: int) -> str:
    """Run-folder path of the checkpoint kept at ``step``."""
    return f"{KEPT_DIR}/step_{step:06d}.keras"


def kept_step(path) -> int | None:
    """The step of a kept checkpoint's path (``kept_name``'s inverse); None for another file."""
    stem = Path(path).stem
    prefix = "step_"
    if Path(path).suffix != ".keras" or not stem.startswith(prefix):
        return None
    digits = stem[len(prefix):]
    return int(digits) if digits.isdigit() else None


@dataclass
class TrainConfig:
    """What ``mri_hsynex train`` trains and how.

    ``network`` "cascade": stage 1 + stage 2 trained together from one synthetic image per step;
    "localiser": the whole-head network at low resolution; "stage1": stage 1 alone (issue 13's
    stage-1-centred experiments; export replaces only ``stage1.keras``).
    ``holdout``: substrings of label-map file names kept out of training; the fixed validation
    set is synthesised from them.
    """

    network: str = "cascade"
    generator: dict = field(default_factory=dict)  # GeneratorConfig fields
    stage1: dict = field(default_factory=dict)  # UNetConfig fields (cascade)
    stage2: dict = field(default_factory=dict)  # UNetConfig fields (cascade)
    localiser: dict = field(default_factory=dict)  # UNetConfig fields (localiser)
    center_labels: list = field(default_factory=lambda: list(range(801, 811)))
    fallback_center_labels: list = field(default_factory=lambda: [28, 60, 14])
    learning_rate: float = 1e-3
    steps: int = 5000
    checkpoint_every: int = 50
    # > 0: every this many steps a copy of the checkpoint is kept as kept/step_NNNNNN.keras, for
    # exporting the mean of the weights along a fine-tuning run (export_run(average_from=...))
    keep_every: int = 0
    validate_every: int = 250
    n_validation: int = 12
    holdout: list = field(default_factory=lambda: ["sub-08"])
    # Label maps that lack all of these labels are not used (e.g. whole-brain maps without
    # subunits for the cascade). Empty: use every map.
    require_labels: list = field(default_factory=list)
    distance_weight: float = 1.0
    ce_weight: float = 1.0
    # --- issue 13 (all off by default: the shipped training) ---------------------------------
    # "independent" (stage 2's softmax) or "product" (stage 1's posterior x stage 2's subunit
    # distribution, trained that way and written to model.json for inference)
    cascade_mode: str = "independent"
    stage1_ce_weight: float = 0.0  # cross-entropy beside stage 1's Dice (0: Dice + distance)
    volume_weight: float = 0.0  # soft-volume error term, both stages
    pair_weight: float = 0.0  # > 0: batches of same-seed pairs and the volume-difference term
    # with pair_weight > 0, the share of steps that train on a same-seed pair; the others train
    # on one ordinary sample of the generator (whose pair term is 0)
    pair_fraction: float = 1.0
    min_volume: float = 50.0  # voxels added to true volumes in the relative volume terms
    mixed_precision: bool = False  # build the networks under the mixed_bfloat16 policy
    sensitivity_pairs: int = 0  # > 0: paired-sensitivity pairs in validation (and its score)
    sensitivity_score_weight: float = 0.5  # score = subunit Dice + w x min(sensitivity, 1)
    # substrings of label-map file names whose subunits train only the whole hypothalamus: stage
    # 2's Dice, cross-entropy and soft-volume terms on those maps' samples see the ten subunit
    # channels merged into one (maps whose subunits were transferred by registration, not
    # painted by the teacher: their inner borders are a vote); the pair term is whole already
    whole_only_maps: list = field(default_factory=list)
    jit_compile: bool = False
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HsynexError(f"unknown training config keys {sorted(unknown)}", source)
        cfg = cls(**d)
        if cfg.network not in NETWORKS:
            raise HsynexError(f"network must be one of {NETWORKS}, not {cfg.network!r}", source)
        if cfg.keep_every < 0 or (cfg.keep_every and cfg.keep_every % cfg.checkpoint_every):
            raise HsynexError("keep_every must be 0 or a multiple of checkpoint_every", source)
        if not 0.0 <= cfg.pair_fraction <= 1.0:
            raise HsynexError(f"pair_fraction must lie in [0, 1], not {cfg.pair_fraction}",
                              source)
        if cfg.cascade_mode not in ("independent", "product"):
            raise HsynexError("cascade_mode must be 'independent' or 'product', not "
                              f"{cfg.cascade_mode!r}", source)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise HsynexError("training config not found", path) from None
        except (OSError, json.JSONDecodeError) as err:
            raise HsynexError(f"cannot read training config ({err})", path) from None
        return cls.from_dict(d, str(path))
