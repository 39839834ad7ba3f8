#!/usr/bin/env bash
# Here (no GPU needed): put what the GPU machine lacks into .gpu/, which git ignores and the device
# tool carries: wheels of the packages its Python has not got (simpy, pydantic) and the CIFAR-10
# test set and the pretrained CIFAR ResNets from ../shared (which does not travel). About 42 MB. Then, from a session lent a GPU:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
mkdir -p .gpu/wheels .gpu/data/cifar10
# the GPU machine's python3 is CPython 3.12 on x86-64 (/work/.library/device/KINDS.md)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels simpy==4.1.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing_extensions==4.16.0
# the pretrained weights: ../shared does not travel and the GPU machine cannot download them
mkdir -p .gpu/models
cp ../shared/models/cifar10/*.th ../shared/models/cifar10/SOURCE.md .gpu/models/
cp ../shared/data/cifar10/SOURCE.md ../shared/data/cifar10/test_exact_prefix.npz \
  ../shared/data/cifar10/test_jpeg.npz .gpu/data/cifar10/
du -sh .gpu
