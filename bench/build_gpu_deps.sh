#!/usr/bin/env bash
# Build .gpu-deps/: the pure-Python (and a few manylinux) packages that Loraboard's
# worker, the web server and the bench (python -m bench: whole-run starts the server and a
# Celery worker there) need on the lent GPU machine, whose image has
# torch/transformers/peft/accelerate/triton for Python 3.12 but not bitsandbytes,
# trl, datasets, liger-kernel, celery, sqlmodel, ... (image list: KINDS.md).
#
# The device cannot reach any registry, so wheels are downloaded HERE for
# CPython 3.12 manylinux x86_64 and unpacked into one folder that goes on
# PYTHONPATH there:
#   run(carry=[".gpu-deps"], command="export PYTHONPATH=$PWD/.gpu-deps:$PWD; ...")
#
# Idempotent: wheels are cached in $GPU_DEPS_CACHE (default ~/.cache/loraboard-gpu-deps)
# and .gpu-deps/ is rebuilt from them; a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=$ROOT/.gpu-deps
CACHE=${GPU_DEPS_CACHE:-$HOME/.cache/loraboard-gpu-deps}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"

# Pinned to the versions of the project's dev venv, so the device runs the same code.
PINS=(
  # training stack the image lacks
  bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  liger-kernel==0.8.5
  # Celery worker
  celery==5.7.0 kombu==5.7.0 billiard==4.3.2 vine==5.1.0 amqp==5.4.2
  click-didyoumean==0.3.1 click-repl==0.4.1 click-plugins==1.1.1.2
  prompt_toolkit==3.0.53 wcwidth==0.9.4 tzlocal==5.4.5 opentelemetry-api==1.45.2
  redis==8.1.0 python-dotenv==1.2.4
  # database and settings (app.config, app.db, app.models)
  sqlmodel==0.0.50 sqlalchemy==2.1.9 greenlet==3.5.6 alembic==1.20.1 mako==1.4.3
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3
  annotated-types==0.8.0 typing-inspection==0.4.5
  # app modules the worker may import
  fastapi==0.165.0 starlette==1.10.0
  # the web server the GPU functional tests (tests/stack.py) and `python -m bench whole-run` start
  uvicorn==0.54.0 python-multipart==0.0.34
  # the built-in SmolLM2 is converted from its GGUF file there (bench/compare_paths.py --preset smollm2)
  gguf==0.19.0
)

# What the device image already holds (KINDS.md, "Python packages already there").
IMAGE_PACKAGES="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet
filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

echo "== downloading ${#PINS[@]} wheels for cp312 manylinux x86_64 into $CACHE"
for pin in "${PINS[@]}"; do
  name=${pin%%==*}; ver=${pin##*==}
  norm=$(echo "$name" | tr 'A-Z-' 'a-z_')
  if ls "$CACHE" | tr 'A-Z-' 'a-z_' | grep -q "^${norm}-${ver}-"; then continue; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$CACHE" "$pin"
done

echo "== checking that every requirement is pinned here or in the device image"
"$PY" - "$CACHE" "$IMAGE_PACKAGES" "${PINS[@]}" <<'PYEOF'
import re, sys, zipfile, pathlib
from packaging.requirements import Requirement
cache, image, pins = pathlib.Path(sys.argv[1]), set(sys.argv[2].split()), sys.argv[3:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {norm(n) for n in image} | {norm(p.split("==")[0]) for p in pins}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
missing = {}
wanted = {norm(p.split("==")[0]): p.split("==")[1] for p in pins}
for whl in cache.glob("*.whl"):
    n, v = whl.name.split("-")[:2]
    if wanted.get(norm(n)) != v:
        continue
    meta = next(f for f in zipfile.ZipFile(whl).namelist() if f.endswith(".dist-info/METADATA"))
    for line in zipfile.ZipFile(whl).read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            r = Requirement(line.split(":", 1)[1].strip())
            if (r.marker is None or r.marker.evaluate(env)) and norm(r.name) not in have:
                missing.setdefault(norm(r.name), []).append(n)
if missing:
    sys.exit(f"missing on the device and not pinned: {missing}")
print("all requirements covered")
PYEOF

echo "== unpacking into $DEST"
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
"$PY" - "$CACHE" "$DEST.tmp" "${PINS[@]}" <<'PYEOF'
import re, sys, zipfile, pathlib
cache, dest, pins = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
wheels = {(norm(w.name.split("-")[0]), w.name.split("-")[1]): w for w in cache.glob("*.whl")}
for pin in pins:
    name, ver = pin.split("==")
    zipfile.ZipFile(wheels[(norm(name), ver)]).extractall(dest)
PYEOF
# Wheels may keep files under NAME.data/{purelib,platlib}: move them to the top.
for d in "$DEST.tmp"/*.data; do
  [ -d "$d" ] || continue
  for sub in purelib platlib; do [ -d "$d/$sub" ] && cp -r "$d/$sub/." "$DEST.tmp/"; done
  rm -rf "$d"
done
# bitsandbytes ships one native library per CUDA version (43 MB); the image has CUDA 13.0.
find "$DEST.tmp/bitsandbytes" -name 'libbitsandbytes_*.so' \
  ! -name 'libbitsandbytes_cuda130.so' ! -name 'libbitsandbytes_cpu.so' -delete
# Cython/C extensions come with debug symbols (sqlalchemy's 8 modules: 9.5 MB -> 1.3 MB).
find "$DEST.tmp" -name '*.so' ! -path '*/bitsandbytes/*' -exec strip --strip-debug {} +
# Test suites and type stubs are never imported at run time.
find "$DEST.tmp" -mindepth 2 -maxdepth 2 -type d -name tests -exec rm -rf {} +
find "$DEST.tmp" -name '*.pyi' -delete
find "$DEST.tmp" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf "$DEST.tmp/bin"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"

grep -qxF '.gpu-deps/' .gitignore 2>/dev/null || echo '.gpu-deps/' >> .gitignore
echo "== $(du -sh --apparent-size "$DEST" | cut -f1) in $DEST ($(ls "$DEST" | wc -l) entries)"
ls "$DEST/bitsandbytes"/libbitsandbytes_*.so
