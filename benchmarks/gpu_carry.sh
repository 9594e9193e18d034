#!/usr/bin/env bash
# What `benchmarks/gpu_check` needs on the lent GPU machine, prepared here, so that none of its
# 15 device minutes goes on setting up. That machine runs Python 3.12 with its own PyTorch (2.11,
# CUDA 13), has no network and no ../shared; vaelab runs there from src/ (PYTHONPATH), beside:
#   .whl/      Python 3.12 wheels of the dependencies its image lacks (the device tool's KINDS.md
#              lists what it has: numpy, scipy, scikit-learn, matplotlib, pillow, safetensors,
#              tqdm, requests, pytest, hypothesis are there), the versions this checkout's .venv has;
#   .gpudata/  the statically binarized MNIST (3.7 MB) from ../shared/data.
# Both are ignored by git (.gitignore) and travel by naming them in the tool's `carry`:
#
#   carry: [".whl", ".gpudata"], timeout_s: 420, command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#     && export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 && mkdir -p ../shared/data
#     && ln -sfn $PWD/.gpudata/binarized_mnist ../shared/data/binarized_mnist
#     && python3 -m benchmarks.gpu_check 2>&1 | tee $OUT/gpu_check.txt
#
# Usage: bash benchmarks/gpu_carry.sh   (from the repository root; needs the package registry)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(pydantic pydantic_core annotated-types typing-inspection typing_extensions mlxtend pooch platformdirs)
versions=()
for name in "${PACKAGES[@]}"; do
    version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "gpu_carry: $name is not in .venv (make install first)" >&2; exit 2; }
    versions+=("$name==$version")
done

rm -rf .whl .gpudata
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "${versions[@]}"

data=../shared/data/binarized_mnist
[ -f "$data/test.npz" ] || { echo "gpu_carry: $data not found" >&2; exit 2; }
mkdir -p .gpudata && cp -r "$data" .gpudata/
echo "gpu_carry: $(ls .whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1)), data in .gpudata ($(du -sh .gpudata | cut -f1))"
