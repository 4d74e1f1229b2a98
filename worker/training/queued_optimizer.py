"""bitsandbytes' optimizers with their updates queued on the GPU, not waited for.

The classic recipe's paged_adamw_32bit (bitsandbytes' Optimizer8bit family) calls
torch.cuda.synchronize() after the update of each parameter tensor: 128 a step on the
7B workload's LoRA adapters. Each one makes the host wait until the GPU has finished
everything queued so far, so the next step's Python and kernel launches cannot start
while the GPU still runs this step's backward.

Nothing needs those waits during training. The updates and the paged states' prefetches
all go to the current stream, which already orders them after the backward and before
the next step's forward; nothing on the host reads the states or the parameters in
between. The host does read the paged states when a checkpoint is saved: they are CUDA
managed memory that torch sees as CPU tensors, so torch.save would read them while the
GPU may still be writing. state_dict() and load_state_dict() therefore synchronize first.

Same kernels, same memory, same order: the updates are bit-identical
(tests/unit/test_queued_optimizer.py).
"""

from __future__ import annotations

from typing import Any

import torch


def step_without_waiting(self: Any, closure: Any = None) -> Any:
    """bitsandbytes.optim.optimizer.Optimizer8bit.step (0.50) without its synchronizes."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    if not self.initialized:
        self.check_overrides()
        self.to_gpu()
        self.initialized = True
    with torch.no_grad():
        for group_index, group in enumerate(self.param_groups):
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if len(self.state[param]) == 0:
                    self.init_state(group, param, group_index, param_index)
                self.prefetch_state(param)
                self.update_step(group, param, group_index, param_index)
    return loss


def _wait_for_the_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


_SUBCLASSES: dict[type, type] = {}


def _queued_subclass(base: type) -> type:
    """`base` with step_without_waiting, and state reads and writes that wait for it (made once)."""
    if base not in _SUBCLASSES:

        class Queued(base):  # type: ignore[misc, valid-type]
            # Wrapped as torch wraps every optimizer's step: its step hooks and profiler label.
            step = torch.optim.Optimizer.profile_hook_step(step_without_waiting)
            step.hooked = True  # type: ignore[attr-defined]

            def state_dict(self) -> dict[str, Any]:
                """The states as the last queued update left them (they are read on the host)."""
                _wait_for_the_device()
                return super().state_dict()

            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                """Overwrite the states once no queued update still writes them."""
                _wait_for_the_device()
                super().load_state_dict(state_dict)

        Queued.__name__ = Queued.__qualname__ = f"Queued{base.__name__}"
        _SUBCLASSES[base] = Queued
    return _SUBCLASSES[base]


def queue_updates(optimizer: Any) -> bool:
    """Give `optimizer`, if it is one of bitsandbytes', the methods above; True if it was."""
    try:
        from bitsandbytes.optim.optimizer import Optimizer8bit
    except ImportError:  # bitsandbytes missing: no such optimizer can exist
        return False
    if not isinstance(optimizer, Optimizer8bit):
        return False
    if type(optimizer) not in _SUBCLASSES.values():
        optimizer.__class__ = _queued_subclass(type(optimizer))
    return True


def queue_trainer_optimizer_updates(trainer: Any) -> None:
    """Make the optimizer that `trainer` (a transformers Trainer) creates in train() queue its updates."""
    create_optimizer = trainer.create_optimizer

    def create_queued_optimizer(*args: Any, **kwargs: Any) -> Any:
        optimizer = create_optimizer(*args, **kwargs)
        queue_updates(trainer.optimizer)
        return optimizer

    trainer.create_optimizer = create_queued_optimizer
