"""bench/throughput.py's profile summary: the device's busy time counts each kernel once."""

from __future__ import annotations

from types import SimpleNamespace

from torch.autograd import DeviceType

from bench.throughput import device_events


def event(key: str, device_type, device_us: float, annotation: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        key=key, device_type=device_type, self_device_time_total=device_us, is_user_annotation=annotation
    )


def test_only_kernels_and_copies_make_the_busy_time() -> None:
    events = [
        event("aten::mm", DeviceType.CPU, 30.0),  # the time of the kernel below, again
        event("nvjet_sm90_tst_128x176", DeviceType.CUDA, 30.0),
        event("Optimizer.step#AdamW.step", DeviceType.CUDA, 12.0, annotation=True),  # spans the next
        event("bitsandbytes_optimizer_update", DeviceType.CUDA, 2.0),
        event("Memcpy HtoD", DeviceType.CUDA, 1.0),
        event("aten::empty", DeviceType.CPU, 0.0),
    ]
    busy = sum(e.self_device_time_total for e in device_events(events))
    assert busy == 33.0
    assert [e.key for e in device_events(events)] == [
        "nvjet_sm90_tst_128x176",
        "bitsandbytes_optimizer_update",
        "Memcpy HtoD",
    ]
