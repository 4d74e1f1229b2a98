"""bitsandbytes' optimizers with their updates queued on the GPU, not waited for, and
one update for all of a parameter group's tensors.

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

The per-tensor updates of bitsandbytes' 32-bit Adam(W) become one update of the group's
concatenation (below, "one update for a whole group"). The same arithmetic: the updates
are bit-identical to bitsandbytes' (tests/worker/training/acceleration/test_queued_optimizer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from worker.training.acceleration.class_swap import cached_subclass


def step_without_waiting(self: Any, closure: Any = None) -> Any:
    """bitsandbytes.optim.optimizer.Optimizer8bit.step (0.50) without its synchronizes, and with
    one update for all of a group's tensors where that is the same arithmetic."""
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
            if updates_at_once(self, group):
                update_group_at_once(self, group_index, group)
                continue
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if len(self.state[param]) == 0:
                    self.init_state(group, param, group_index, param_index)
                self.prefetch_state(param)
                self.update_step(group, param, group_index, param_index)
    return loss


# --- one update for a whole group -----------------------------------------------------
#
# bitsandbytes' 32-bit Adam(W) kernel is elementwise: each element's new value, first and
# second moment depend on that element's gradient, value and moments, the step, and the
# group's hyperparameters alone. Updating the concatenation of a group's tensors at once
# is therefore the same arithmetic as updating them one by one, with one kernel launch
# (plus one concatenation of the gradients and values and one copy back) instead of 128
# launches and 256 page prefetches, each through Python and ctypes: about 20 ms of host
# time a step on the 7B workload. The moments live in one buffer per group (paged like
# bitsandbytes' own above 1e5 elements); each parameter's state holds views into it, so
# state_dict() has bitsandbytes' layout and a checkpoint loads into either optimizer.


@dataclass
class _GroupStates:
    params: list[torch.Tensor]
    first: torch.Tensor
    second: torch.Tensor
    step: int


def updates_at_once(optimizer: Any, group: dict[str, Any]) -> bool:
    """Whether one update of `group`'s concatenation is bitsandbytes' per-tensor arithmetic."""
    from bitsandbytes.optim.optimizer import Optimizer2State

    params = group["params"]
    if len(params) < 2 or any(param.grad is None for param in params):
        return False
    # Adam(W) through Optimizer2State's own update_step only (AdEMAMix, for one, has its own).
    if optimizer.optimizer_name != "adam" or type(optimizer).update_step is not Optimizer2State.update_step:
        return False
    first = params[0]
    args = optimizer.args
    manager = optimizer.mng
    return (
        args.optim_bits == 32
        and args.max_unorm == 0.0
        and not manager.index2config
        and not any(id(param) in manager.pid2config for param in params)
        and all(param.dtype == first.dtype and param.device == first.device for param in params)
        and all(param.grad.dtype == first.dtype for param in params)
    )


def _state_buffer(optimizer: Any, numel: int, device: torch.device) -> torch.Tensor:
    """A zeroed float32 moment buffer, paged where bitsandbytes would page one this size."""
    from bitsandbytes import functional

    if device.type == "cuda" and optimizer.is_paged and numel >= 1e5:
        buffer = functional.get_paged(numel, dtype=torch.float32, device=device)
        functional.fill(buffer, 0)
        optimizer.page_mng.paged_tensors.append(buffer)
        return buffer
    return torch.zeros(numel, dtype=torch.float32, device=device)


def _group_states(optimizer: Any, group_index: int, group: dict[str, Any]) -> _GroupStates:
    """The group's moment buffers, made at the first step or after load_state_dict.

    Moments a parameter already has (a resumed checkpoint) are copied in; each parameter's
    state then holds views into the group's buffers.
    """
    groups: dict[int, _GroupStates] = optimizer.__dict__.setdefault("_loraboard_group_states", {})
    params = list(group["params"])
    found = groups.get(group_index)
    if (
        found is not None
        and len(found.params) == len(params)
        and all(a is b for a, b in zip(found.params, params, strict=True))
    ):
        return found
    numel = sum(param.numel() for param in params)
    device = params[0].device
    states = _GroupStates(
        params, _state_buffer(optimizer, numel, device), _state_buffer(optimizer, numel, device), 0
    )
    offset = 0
    for param in params:
        state = optimizer.state[param]
        span = slice(offset, offset + param.numel())
        for name, buffer in (("state1", states.first), ("state2", states.second)):
            view = buffer[span].view(param.shape)
            if name in state:
                view.copy_(state[name].reshape(param.shape))
            state[name] = view
        states.step = max(states.step, int(state.get("step", 0)))
        offset += param.numel()
    groups[group_index] = states
    return states


def update_group_at_once(optimizer: Any, group_index: int, group: dict[str, Any]) -> None:
    """bitsandbytes' Optimizer2State.update_step for every tensor of `group`, in one kernel."""
    from bitsandbytes import functional

    states = _group_states(optimizer, group_index, group)
    params = states.params
    gradients = torch.cat([cast(torch.Tensor, param.grad).reshape(-1) for param in params])
    values = torch.cat([param.reshape(-1) for param in params])
    states.step += 1
    for param in params:
        optimizer.state[param]["step"] = states.step
    for buffer in (states.first, states.second):
        if getattr(buffer, "is_paged", False):
            functional.prefetch_tensor(buffer)
    betas = group["betas"]
    functional.optimizer_update_32bit(
        optimizer.optimizer_name,
        gradients,
        values,
        states.first,
        betas[0],
        group["eps"],
        states.step,
        group["lr"],
        states.second,
        betas[1],
        betas[2] if len(betas) >= 3 else 0.0,
        group.get("alpha", 0.0),
        group["weight_decay"],
        1.0,
        None,
        max_unorm=0.0,
        skip_zeros=optimizer.args.skip_zeros,
    )
    torch._foreach_copy_(
        params,
        [
            part.view(param.shape)
            for part, param in zip(values.split([p.numel() for p in params]), params, strict=True)
        ],
    )


def _wait_for_the_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# The mixin's methods use bitsandbytes' Optimizer8bit attributes; to the type checker it is one.
_Optimizer: Any = object


class Queued(_Optimizer):
    """step_without_waiting, and state reads and writes that wait for it (mixed in before a
    bitsandbytes optimizer's class by queue_updates)."""

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
        # The loaded moments are separate tensors now: the next step gathers them again.
        self.__dict__.pop("_loraboard_group_states", None)


def queue_updates(optimizer: Any) -> bool:
    """Give `optimizer`, if it is one of bitsandbytes', the methods above; True if it was."""
    try:
        from bitsandbytes.optim.optimizer import Optimizer8bit
    except ImportError:  # bitsandbytes missing: no such optimizer can exist
        return False
    if not isinstance(optimizer, Optimizer8bit):
        return False
    if not isinstance(optimizer, Queued):
        optimizer.__class__ = cached_subclass(type(optimizer), "Queued", mixin=Queued)
    return True


def queue_trainer_optimizer_updates(trainer: Any) -> None:
    """Make the optimizer that `trainer` (a transformers Trainer) creates in train() queue its updates."""
    create_optimizer = trainer.create_optimizer

    def create_queued_optimizer(*args: Any, **kwargs: Any) -> Any:
        optimizer = create_optimizer(*args, **kwargs)
        queue_updates(trainer.optimizer)
        return optimizer

    trainer.create_optimizer = create_queued_optimizer
