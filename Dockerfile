# Loraboard: one image for the server and the GPU workers (the command picks the role).
# Build on a GPU host: docker compose build. torch comes from PyTorch's CUDA index;
# the NVIDIA container runtime provides the driver.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

# Compiled kernels and graphs on the data volume: a worker compiles a model shape's
# layers once (a minute or two at the first steps), later runs of that shape load them.
# The Hugging Face cache too: models are downloaded (or the built-in SmolLM2 prepared)
# once for the server, which checks ids at submission, and every worker.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LORABOARD_DATA_DIR=/data \
    LORABOARD_HOST=0.0.0.0 \
    HF_HOME=/data/huggingface \
    TORCHINDUCTOR_CACHE_DIR=/data/cache/torchinductor \
    TRITON_CACHE_DIR=/data/cache/triton

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first and explicitly, from the CUDA index, so the project's `torch>=…` is already met.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
RUN pip install .
COPY alembic.ini ./
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY data ./data
RUN pip install --no-deps -e . && mkdir -p /data

EXPOSE 8000
VOLUME ["/data"]
CMD ["loraboard", "serve"]
