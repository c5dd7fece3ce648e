#!/usr/bin/env bash
# The child trainer's GPU suite (benchmarks/gpu_suite.py): trainer vs naive DataLoader images/s for the
# paper's 6- and 15-layer children (bf16, channels_last, eager and torch.compile), seconds per epoch and per
# 50-epoch child at 45,000 images, children per hour per GPU for k = 1, 2, 4, 8 processes, peak memory.
# At most 8 minutes on one GPU (killed at 480 s; every section prints as it ends).
#   benchmarks/gpu_suite.sh                        # on the GPU (CIFAR-10 from $NAS_DATA_DIR, else generated)
#   benchmarks/gpu_suite.sh --device cpu --quick   # dry run in under a minute
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=INT 480 python benchmarks/gpu_suite.py "$@"
