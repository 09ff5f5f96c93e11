#!/usr/bin/env bash
# Continue training the cascade on a lent GPU machine within one call of the workplace's `device`
# tool (one command of at most 10 minutes; the session's device time is 15 minutes in all).
#
# Here, once:  make gpu-bundle        (build/gpu, 12 MB: wheels for the device's Python 3.12 and
#                                     the label maps; the working tree that travels is ~51 MB of
#                                     its 64 MiB with it)
# The call:    run(command="bash models/device_train.sh", carry=["build/gpu"], timeout_s=600)
#              A second call on the still-warm machine resumes runs/gpu, which stays there (do not
#              carry it: with its optimiser it is 28 MB). A later session starts from exported
#              networks instead: commit models_mean.tar's (or models_best.tar's) networks as
#              models/training_checkpoints/cascade_gpu and call with INIT=<that folder>.
# Back here:   unpack models_best.tar / models_mean.tar over a copy of models/ and evaluate them as
#              any checkpoint (models/MODEL_CARD.md, "Continue training"); cat last.keras.part-*
#              > runs/gpu/last.keras with state.json beside it resumes the run on this CPU.
#
# Default: models/train_cascade_gpu.json from the shipped networks (run k's recipe with pairs in
# half the steps and the outer resize kind; its notes say why). Run q's route instead:
# CONFIG=models/train_cascade_pairs_q.json INIT=models/training_checkpoints/cascade_pairs_q21.
#
# It trains CONFIG from INIT (or resumes RUN when RUN holds a state.json) for MINUTES of wall
# clock, then copies what a later session needs into $OUT (when set): state.json, logs.tar.gz
# (train log, validation curve, config), last.keras in 15 MB parts (cat them; it holds the
# optimiser, for --resume), models_best.tar (the best checkpoint's networks, exported, with the
# shipped model.json's settings: unpack over a copy of models/ to evaluate) and
# models_mean.tar (the mean of the KEEP newest kept checkpoints, when there are two or more).
# Runs on a CPU too (PYTHON=.venv/bin/python MINUTES=1 OUT=/tmp/out bash models/device_train.sh).
set -euo pipefail
BUNDLE=${BUNDLE:-build/gpu}
RUN=${RUN:-runs/gpu}
CONFIG=${CONFIG:-models/train_cascade_gpu.json}
INIT=${INIT:-models}
MINUTES=${MINUTES:-7}
KEEP=${KEEP:-3}
PY=${PYTHON:-python3}

if ! "$PY" -c "import keras, nibabel" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$BUNDLE"/wheels/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=${KERAS_BACKEND:-torch} PYTHONUNBUFFERED=1
if [ "$KERAS_BACKEND" = torch ]; then
    "$PY" -c "import torch; print('torch', torch.__version__, 'on',
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"
fi

start=(--init "$INIT")
[ -f "$RUN/state.json" ] && start=(--resume)
"$PY" -m mri_hsynex train --config "$CONFIG" --labels "$BUNDLE/labels" --o "$RUN" "${start[@]}" \
    --minutes "$MINUTES" --no-progress
tail -n 3 "$RUN/validation.csv"

if [ -n "${OUT:-}" ]; then  # at most 8 files of 16 MiB come back: the networks without optimiser
    cp "$RUN/state.json" "$OUT/"
    tar czf "$OUT/logs.tar.gz" -C "$RUN" train_log.csv validation.csv config.json
    split -b 15M "$RUN/last.keras" "$OUT/last.keras.part-"  # with the optimiser, for --resume
    "$PY" -m mri_hsynex.train.bundle pack "$RUN" "$OUT" "$KEEP"  # the networks, exported
    ls -la "$OUT"
fi
