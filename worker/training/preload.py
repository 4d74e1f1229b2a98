"""The training libraries a run needs, imported once by the training worker's parent.

The training worker forks a fresh child for every run (its GPU memory goes back with the
child), and a fresh child would import torch, transformers and datasets again: seconds of
every run's start before the first line of training. Imported in the parent, before the
pool forks, a child has them already.

Only modules that leave CUDA alone: a CUDA context made before a fork is unusable in the
child. bitsandbytes probes the GPU when it is imported, and peft (and trl, through it)
import bitsandbytes, so those stay in the child, which imports them while it waits for its
run (child_warmup.py).
"""

from __future__ import annotations

import importlib

PRELOADED = (
    "torch",
    "transformers.modeling_utils",
    "transformers.models.llama.modeling_llama",
    "datasets",
    "accelerate",
)


def preload_training_libraries() -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError(
            "preloading the training libraries initialized CUDA in the worker's parent process; "
            "its forked children could not use the GPU"
        )
