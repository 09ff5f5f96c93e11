"""The training loop: synthetic image per step -> one optimiser step; CSV logs, fixed validation
set, best/last checkpoints, resumable.

Files in the run folder:
``config.json`` (the TrainConfig), ``train_log.csv`` (step, losses, seconds), ``validation.csv``
(step, Dice), ``validation_set.npz`` (the fixed synthetic validation images), ``last.keras`` and
``state.json`` (resume point, optimiser included), ``best.keras`` (best validation score);
with ``keep_every``, ``kept/step_NNNNNN.keras`` (copies for weight averaging, ``export``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import HsynexError
from ..generator.data import list_label_maps, named_by
from ..io import atomic_path
from ..labels import LOCALISER_CLASS_NAMES, STAGE2_CLASSES
from .config import KEPT_DIR, TrainConfig, kept_name

LOCALISER_SCORED = (2, 3, 4)  # ventral DC left/right, 3rd ventricle: what the localiser is for


def find_label_maps(folder: str | Path) -> list[Path]:
    """Label-map files in ``folder`` (sorted); an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HsynexError("label-map folder not found", folder)
    return list_label_maps(folder)


def with_labels(paths: list[Path], required: list[int]) -> list[Path]:
    """The maps among ``paths`` that contain at least one of the ``required`` labels."""
    if not required:
        return paths
    from ..io import load_volume

    return [p for p in paths
            if np.isin(load_volume(p, kind="labels").data, required).any()]


def split_holdout(paths: list[Path], holdout: list[str]) -> tuple[list[Path], list[Path]]:
    """(training maps, held-out maps): a map is held out if its name contains a holdout string."""
    held = [p for p in paths if named_by(p, holdout)]
    train = [p for p in paths if p not in held]
    if not train:
        raise HsynexError("every label map is held out; nothing left to train on", paths[0].parent)
    return train, held


class Trainer:
    """Trains ``cfg.network`` on synthetic images of the label maps in ``label_dir``."""

    def __init__(self, cfg: TrainConfig, label_dir: str | Path, run_dir: str | Path,
                 seed: int = 0, resume: bool = False, init_dir: str | Path | None = None):
        from ..generator import GeneratorConfig, LabelMapSource, build_generator

        self.cfg, self.run_dir, self.seed = cfg, Path(run_dir), seed
        self.run_dir.mkdir(parents=True, exist_ok=True)
        paths = with_labels(find_label_maps(label_dir), cfg.require_labels)
        if not paths:
            raise HsynexError(f"no label map contains any of {cfg.require_labels}", label_dir)
        train_paths, held = split_holdout(paths, cfg.holdout)
        self.gen_cfg = GeneratorConfig.from_dict(cfg.generator)
        self.state = {"step": 0, "best_score": -1.0, "seconds": 0.0}
        if resume and (self.run_dir / "state.json").exists():
            self.state = json.loads((self.run_dir / "state.json").read_text())
        # Seeds move with the step so that a resumed run does not replay the same images.
        step = self.state["step"]
        self.source = LabelMapSource(train_paths, self.gen_cfg, center_labels=cfg.center_labels,
                                     fallback_center_labels=cfg.fallback_center_labels,
                                     rng_seed=seed + 7919 * step)
        self.generator = build_generator(self.gen_cfg, seed=seed + 104729 * step)
        self._mix_rng = np.random.default_rng(seed + 61 * step)  # which steps train on a pair
        self.held_paths = held
        self.model = self._load_or_build(resume, init_dir)
        self._trim_logs(step)
        (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    # --- model -----------------------------------------------------------------------------------
    def _uses_volume_losses(self) -> bool:
        c = self.cfg
        return bool(c.stage1_ce_weight or c.volume_weight or c.pair_weight or c.whole_only_maps)

    def _losses(self):
        from ..models.losses import DiceCrossEntropy, DiceDistance, VolumeAwareLoss

        c = self.cfg
        if c.network == "localiser":
            return DiceCrossEntropy(c.ce_weight)
        if not self._uses_volume_losses():
            losses = {"stage1": DiceDistance(2, self.gen_cfg.distance_max_mm, c.distance_weight),
                      "stage2": DiceCrossEntropy(c.ce_weight)}
        else:
            losses = {"stage1": VolumeAwareLoss(2, 1.0, c.stage1_ce_weight, c.volume_weight,
                                                c.pair_weight, c.distance_weight,
                                                self.gen_cfg.distance_max_mm, c.min_volume),
                      "stage2": VolumeAwareLoss(11, 1.0, c.ce_weight, c.volume_weight,
                                                c.pair_weight, 0.0, min_volume=c.min_volume,
                                                whole_only_flag=bool(c.whole_only_maps))}
        if c.network == "stage1":
            del losses["stage2"]
        return losses

    def _build(self):
        import keras

        from ..models.cascade import build_cascade_for_training, build_stage1_for_training
        from ..models.unet import UNetConfig, build_unet

        optimizer = keras.optimizers.Adam(self.cfg.learning_rate)
        # bfloat16 compute only inside the networks (their outputs are float32); the generator
        # and everything built later stay float32
        previous = keras.config.dtype_policy()
        if self.cfg.mixed_precision:
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            if self.cfg.network == "cascade":
                model = build_cascade_for_training(UNetConfig.from_dict(self.cfg.stage1),
                                                   UNetConfig.from_dict(self.cfg.stage2),
                                                   self.cfg.cascade_mode)
            elif self.cfg.network == "stage1":
                model = build_stage1_for_training(UNetConfig.from_dict(self.cfg.stage1))
            else:
                model = build_unet(UNetConfig.from_dict(self.cfg.localiser))
        finally:
            keras.config.set_dtype_policy(previous)
        model.compile(optimizer=optimizer, loss=self._losses(),
                      jit_compile=self.cfg.jit_compile)
        return model

    def _load_or_build(self, resume: bool, init_dir):
        import keras

        from ..models import layers, losses  # noqa: F401  (registers the saved classes)

        last = self.run_dir / "last.keras"
        if resume and last.exists():
            model = keras.saving.load_model(last, compile=True)
            # the config's rate applies on resume (continue a run with a lower rate to finish)
            model.optimizer.learning_rate.assign(self.cfg.learning_rate)
            return model
        model = self._build()
        if init_dir is not None:
            self._init_from(model, Path(init_dir))
        return model

    def _init_from(self, model, init_dir: Path) -> None:
        """Start from the weights of already trained networks (e.g. the shipped ``models/``)."""
        import keras

        names = {"cascade": ["stage1", "stage2"], "stage1": ["stage1"]}.get(self.cfg.network,
                                                                            ["localiser"])
        for name in names:
            path = init_dir / f"{name}.keras"
            if not path.exists():
                raise HsynexError(f"no {name} network to start from", path)
            trained = keras.saving.load_model(path, compile=False)
            target = model if self.cfg.network == "localiser" else model.get_layer(name)
            target.set_weights(trained.get_weights())

    # --- data ------------------------------------------------------------------------------------
    def _pair_renderer(self):
        from ..generator.paired import PairRenderer

        if getattr(self, "_pairs", None) is None:
            self._pairs = PairRenderer(self.gen_cfg, seed=self.seed + 15485863
                                       + 104729 * self.state["step"])
            self._pair_rng = np.random.default_rng(self.seed + 31 * self.state["step"])
        return self._pairs

    def _pair_step(self) -> bool:
        """Whether this step trains on a same-seed pair (``pair_fraction`` of the steps)."""
        c = self.cfg
        return c.pair_weight > 0 and (c.pair_fraction >= 1.0
                                      or self._mix_rng.random() < c.pair_fraction)

    def _batch(self, generator, source, pairs: bool = False) -> tuple[np.ndarray, object]:
        import keras

        index = source.sample_index()
        labels, center = source.get(index)  # the block of the map the generator can reach
        if pairs:  # two samples, identical but for the hypothalamus' size
            renderer = self._pair_renderer()
            m = self.gen_cfg.resize_max_fraction
            fractions = self._pair_rng.uniform(-m, m, (2, 2)).astype(np.float32)
            out = renderer.render(labels, center, fractions)
        else:
            out = generator({"labels": labels, "center": center}, training=True)
        image = keras.ops.convert_to_numpy(out["image"]).astype(np.float32)
        target = keras.ops.convert_to_numpy(out["target"]).astype(np.float32)
        if self.cfg.network == "localiser":
            return image, target
        distance = keras.ops.convert_to_numpy(out["distance"]).astype(np.float32)
        background = target[..., :1]
        stage1 = np.concatenate([background, 1.0 - background, distance], axis=-1)
        if self.cfg.network == "stage1":
            return image, {"stage1": stage1}
        if self.cfg.whole_only_maps:  # the per-sample flag the stage-2 loss reads
            flag = float(self.whole_only(source.paths[index]))
            target = np.concatenate([target, np.full(target.shape[:-1] + (1,), flag,
                                                     np.float32)], axis=-1)
        return image, {"stage1": stage1, "stage2": target}

    def whole_only(self, path: Path) -> bool:
        """Whether the map at ``path`` trains only the whole hypothalamus (``whole_only_maps``)."""
        return named_by(path, self.cfg.whole_only_maps)

    def validation_set(self) -> dict[str, np.ndarray]:
        """The fixed validation images (made once, from the held-out maps, with a fixed seed)."""
        path = self.run_dir / "validation_set.npz"
        if path.exists():
            return dict(np.load(path))
        from ..generator import LabelMapSource, build_generator

        paths = self.held_paths or [self.source.paths[0]]
        source = LabelMapSource(paths, self.gen_cfg, center_labels=self.cfg.center_labels,
                                fallback_center_labels=self.cfg.fallback_center_labels,
                                rng_seed=123456)
        generator = build_generator(self.gen_cfg, seed=123456)
        images, truths = [], []
        for _ in range(self.cfg.n_validation):
            image, target = self._batch(generator, source)
            if self.cfg.network == "localiser":
                truth = target
            elif self.cfg.network == "cascade":
                truth = target["stage2"][..., :len(STAGE2_CLASSES)]  # no whole-only flag
            else:  # stage 1 alone: background / hypothalamus
                truth = target["stage1"][..., :2]
            images.append(image[0])
            truths.append(np.argmax(truth[0], axis=-1).astype(np.uint8))
        data = {"images": np.stack(images), "truth": np.stack(truths)}
        with atomic_path(path) as tmp:
            np.savez_compressed(open(tmp, "wb"), **data)
        return data

    def sensitivity_pairs(self) -> dict[str, np.ndarray]:
        """The fixed same-seed pairs of the paired-sensitivity check (made once from the
        held-out maps: ``cfg.sensitivity_pairs`` seeds per map, 20 % shrinkage of both kinds;
        ``validate.generator_probe``)."""
        path = self.run_dir / "sensitivity_pairs.npz"
        if path.exists():
            return dict(np.load(path))
        from ..validate.generator_probe import probe_config, render_pairs

        cfg = probe_config(self.cfg.generator)
        pairs = render_pairs(cfg, self.held_paths or [self.source.paths[0]],
                             range(self.cfg.sensitivity_pairs))
        data = {"images": np.stack([p.images for p in pairs]),
                "true": np.stack([p.true_mm3 for p in pairs]),
                "kind": np.array([p.kind for p in pairs])}
        with atomic_path(path) as tmp:
            np.savez_compressed(open(tmp, "wb"), **data)
        return data

    def paired_sensitivity(self) -> dict[str, float]:
        """Mean paired sensitivity (stage 1 soft volume, cascade soft volume) per kind."""
        from ..validate.generator_probe import KIND_NAMES, measure_volumes

        data = self.sensitivity_pairs()
        stage1 = self.model.get_layer("stage1")
        stage2 = self.model.get_layer("stage2") if self.cfg.network == "cascade" else None
        out: dict[str, list] = {}
        for images, true, kind in zip(data["images"], data["true"], data["kind"]):
            volumes = measure_volumes(stage1, stage2, images, self.cfg.cascade_mode)
            true_change = true[1] / true[0] - 1.0
            for name in ("stage1_soft", "cascade_soft") if stage2 is not None else ("stage1_soft",):
                v = volumes[name]
                value = (v[1] / v[0] - 1.0) / true_change if v[0] > 0 else np.nan
                out.setdefault(f"sens_{KIND_NAMES[int(kind)]}_{name}", []).append(value)
        return {k: float(np.nanmean(v)) for k, v in out.items()}

    def validate(self) -> dict[str, float]:
        """Hard Dice on the fixed validation set (and, with ``sensitivity_pairs``, the paired
        sensitivity); ``score`` decides the best checkpoint."""
        from ..models.losses import dice_per_class

        data = self.validation_set()
        per_image = []
        for image, truth in zip(data["images"], data["truth"]):
            pred = self.model.predict_on_batch(image[None])
            if self.cfg.network == "localiser":
                probs = pred
            elif self.cfg.network == "cascade":
                probs = pred["stage2"]
            else:
                probs = np.asarray(pred["stage1"])[..., :2]
            labels = np.argmax(np.asarray(probs)[0], axis=-1)
            localiser = self.cfg.network == "localiser"
            n = len(LOCALISER_CLASS_NAMES) if localiser else len(STAGE2_CLASSES)
            if self.cfg.network == "stage1":
                n = 2
            dice = dice_per_class(truth, labels, n)
            if self.cfg.network in ("cascade", "stage1"):
                whole = dice_per_class(truth > 0, labels > 0, 2)[1]
                dice = np.append(dice, whole)
            per_image.append(dice)
        dice = np.nanmean(np.array(per_image), axis=0)
        if self.cfg.network in ("cascade", "stage1"):
            result = {"dice_whole": float(dice[-1]), "dice_subunits": float(np.nanmean(dice[1:-1]))}
            if self.cfg.network == "stage1":
                result = {"dice_whole": float(dice[-1])}
            result["score"] = result.get("dice_subunits", result["dice_whole"])
            if self.cfg.sensitivity_pairs > 0:
                sens = self.paired_sensitivity()
                result.update(sens)
                owner = "cascade_soft" if self.cfg.network == "cascade" else "stage1_soft"
                cascade = np.nanmean([v for k, v in sens.items() if k.endswith(owner)])
                result["score"] += self.cfg.sensitivity_score_weight * float(
                    np.clip(cascade, 0.0, 1.0))
        else:
            result = {f"dice_{LOCALISER_CLASS_NAMES[c]}": float(dice[c])
                      for c in range(1, len(LOCALISER_CLASS_NAMES))}
            result["score"] = float(np.nanmean(dice[list(LOCALISER_SCORED)]))
        return result

    # --- checkpoints and logs --------------------------------------------------------------------
    def _save(self, name: str) -> None:
        path = self.run_dir / name
        tmp = path.with_name(f".{path.stem}.tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, path)

    def _checkpoint(self) -> None:
        self._save("last.keras")
        with atomic_path(self.run_dir / "state.json") as tmp:
            Path(tmp).write_text(json.dumps(self.state))
        step = self.state["step"]
        if self.cfg.keep_every and step % self.cfg.keep_every == 0:  # a copy, not a second save
            (self.run_dir / KEPT_DIR).mkdir(exist_ok=True)
            with atomic_path(self.run_dir / kept_name(step)) as tmp:
                shutil.copyfile(self.run_dir / "last.keras", tmp)

    def _trim_logs(self, step: int) -> None:
        """Drop log rows after ``step`` (work done after the checkpoint we start from)."""
        for name in ("train_log.csv", "validation.csv"):
            path = self.run_dir / name
            if not path.exists():
                continue
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            kept = [r for r in rows if int(r["step"]) <= step]
            if len(kept) == len(rows):
                continue
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                if rows:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(kept)

    def _log(self, name: str, row: dict) -> None:
        path = self.run_dir / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    # --- loop ------------------------------------------------------------------------------------
    def run(self, steps: int | None = None, progress: bool = True,
            minutes: float | None = None) -> dict:
        """Train until ``steps`` (total, counting earlier runs of a resumed folder) or, with
        ``minutes``, until that much wall-clock time has passed in this call (for a lease or a
        session of fixed length), whichever comes first. The step it stops at is validated and
        checkpointed, so ``--resume`` continues from it."""
        from tqdm import tqdm

        total = int(steps if steps is not None else self.cfg.steps)
        start = self.state["step"]
        deadline = None if minutes is None else time.time() + 60.0 * float(minutes)
        self.validation_set()
        bar = tqdm(total=total, initial=start, disable=not progress, unit="step",
                   desc=self.cfg.network, dynamic_ncols=True)
        t_last = time.time()
        for step in range(start + 1, total + 1):
            x, y = self._batch(self.generator, self.source, pairs=self._pair_step())
            losses = self.model.train_on_batch(x, y, return_dict=True)
            now = time.time()
            self.state["seconds"] += now - t_last
            t_last = now
            self.state["step"] = step
            row = {"step": step, **{k: round(float(v), 5) for k, v in losses.items()},
                   "seconds": round(self.state["seconds"], 1)}
            self._log("train_log.csv", row)
            bar.set_postfix(loss=f"{float(losses['loss']):.3f}")
            bar.update(1)
            last = step == total or (deadline is not None and now >= deadline)
            if step % self.cfg.validate_every == 0 or last:
                result = self.validate()
                self._log("validation.csv", {"step": step, **{k: round(v, 4)
                                                               for k, v in result.items()}})
                if result["score"] > self.state["best_score"]:
                    self.state["best_score"] = result["score"]
                    self.state["best_step"] = step
                    self._save("best.keras")
                t_last = time.time()
            if step % self.cfg.checkpoint_every == 0 or last:
                self._checkpoint()
            if last:
                break
        bar.close()
        return self.state
