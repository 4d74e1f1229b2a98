"""bitsandbytes' optimizers without a device synchronize after every tensor's update.

The classic recipe's paged_adamw_32bit (bitsandbytes' Optimizer8bit family) calls
torch.cuda.synchronize() after the update of each parameter tensor: 128 a step for the
7B workload's LoRA adapters, each one draining the GPU's queue while the CPU waits, then
the GPU waiting for the CPU's next launch. The updates and the paged states' prefetches
all go to the same stream, which already orders them; nothing on the host reads the
states or the parameters in between. Queued without those synchronizes, the step runs
the same kernels on the same (paged) memory in the same order, and so trains
bit-identically (tests/unit/test_unsynchronized_optimizer.py); bitsandbytes' own
synchronize at the end of the step is kept.
"""

from __future__ import annotations

from typing import Any

import torch


def step_without_per_tensor_sync(self: Any, closure: Any = None) -> Any:
    """bitsandbytes.optim.optimizer.Optimizer8bit.step (0.50), with one synchronize a step."""
    from bitsandbytes.utils import sync_gpu

    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    if not self.initialized:
        self.check_overrides()
        self.to_gpu()
        self.initialized = True
    last = None
    with torch.no_grad():
        for group_index, group in enumerate(self.param_groups):
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if len(self.state[param]) == 0:
                    self.init_state(group, param, group_index, param_index)
                self.prefetch_state(param)
                self.update_step(group, param, group_index, param_index)
                last = param
    if last is not None:
        sync_gpu(last)
    return loss


_SUBCLASSES: dict[type, type] = {}


def unsynchronize(optimizer: Any) -> bool:
    """Give `optimizer`, if it is one of bitsandbytes', the step above; True if it was."""
    try:
        from bitsandbytes.optim.optimizer import Optimizer8bit
    except ImportError:  # bitsandbytes missing: no such optimizer can exist
        return False
    if not isinstance(optimizer, Optimizer8bit):
        return False
    base = type(optimizer)
    if base not in _SUBCLASSES:
        # Wrapped as torch wraps every optimizer's step: its step hooks and profiler label.
        step = torch.optim.Optimizer.profile_hook_step(step_without_per_tensor_sync)
        step.hooked = True  # type: ignore[attr-defined]
        _SUBCLASSES[base] = type(
            f"Unsynchronized{base.__name__}", (base,), {"step": step, "__module__": __name__}
        )
    optimizer.__class__ = _SUBCLASSES[base]
    return True


def unsynchronize_trainer_optimizer(trainer: Any) -> None:
    """Make the optimizer that `trainer` (a transformers Trainer) creates in train() unsynchronized."""
    create_optimizer = trainer.create_optimizer

    def create_unsynchronized_optimizer(*args: Any, **kwargs: Any) -> Any:
        optimizer = create_optimizer(*args, **kwargs)
        unsynchronize(trainer.optimizer)
        return optimizer

    trainer.create_optimizer = create_unsynchronized_optimizer
