#!/usr/bin/env bash
# Train the separator on a lent GPU machine for about MINUTES minutes, then measure its
# inference speed there. One prepared command for the device tool's `run`:
#
#   here, once:  .venv/bin/python -c "from filmrestore.separation.training.bank import SourceBank, export_compact; \
#                   export_compact(SourceBank('bank'), '.bank-compact')"          # ~60 MiB, train+valid only
#                bash separation/training/train_device.sh --fetch-wheels                    # soundfile, cffi, pycparser, pyloudnorm
#   device run:  command "bash separation/training/train_device.sh .bank-compact \$OUT 8.5", carry [".bank-compact", ".whl"]
#
# It starts from the shipped checkpoint, mixes on 14 DataLoader processes, runs the model in bf16
# autocast, validates and saves to OUT every minute (checkpoint, its JSON with the training log,
# the resumable state), and appends a cuda row of benchmarks/separation.py. The same script runs
# on a CPU with tiny settings in tests/test_bank.py (TRAIN_DEVICE_ARGS and BENCH_DEVICE_ARGS override
# the settings; TRAIN_DEVICE_FRESH=1 lays the package out as on a bare machine even where it is installed).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.bank-compact/' .git/info/exclude 2>/dev/null || echo '/.bank-compact/' >> .git/info/exclude
    for spec in soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 pyloudnorm==0.2.0; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d .whl "$spec"
    done
    exit 0
fi
BANK="$1"; OUT="$2"; MINUTES="${3:-8.5}"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if [ -n "${TRAIN_DEVICE_FRESH:-}" ] || ! "$PYTHON" -c "import filmrestore.separation.training.train" 2>/dev/null; then
    SITE="${TMPDIR:-/tmp}/filmrestore-site"
    [ -d .whl ] && "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    # The import package without building it: filmrestore/ plus the top-level folders it maps (pyproject.toml).
    mkdir -p "$SITE/filmrestore"
    cp -r filmrestore/. "$SITE/filmrestore/"
    for sub in flows tasks separation upmix; do ln -sfn "$PWD/$sub" "$SITE/filmrestore/$sub"; done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
# shellcheck disable=SC2086
"$PYTHON" -m filmrestore.separation.training.train "$BANK" --out "$OUT/dme.safetensors" \
    --init separation/checkpoints/dme-small.safetensors --device auto --max-minutes "$MINUTES" \
    ${TRAIN_DEVICE_ARGS:---epochs 1000 --steps-per-epoch 100000 --epoch-minutes 1 --batch-size 32 --segment-s 6 \
      --learning-rate 1e-3 --warmup-steps 100 --total-steps 3000 --ema-decay 0.999 --valid-examples 64 --num-workers 14 \
      --dialogue-weight 1.5} \
    2>&1 | tee "$OUT/train.log"
"$PYTHON" benchmarks/separation.py --separators neural --checkpoint "$OUT/dme.safetensors" \
    ${BENCH_DEVICE_ARGS:---minutes 10 --devices cuda} 2>&1 | tee "$OUT/bench.log"
