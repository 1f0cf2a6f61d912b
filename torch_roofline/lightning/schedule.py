"""When the callback profiles: :class:`RooflineSchedule` (wait, warmup, active, every_n_steps, in
optimizer steps) and the profiling window it opens around real steps, with Lightning's closure
run inside a forward range.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple


from torch_roofline.timing.ranges import phase_range


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class RooflineSchedule:
    """When the callback profiles, in optimizer steps (``trainer.global_step``).

    Args:
        wait: steps skipped before the first window (first-step costs).
        warmup: steps run under the profiler, results discarded.
        active: steps recorded and averaged into the report.
        every_n_steps: distance between window starts; ``None``: one window only.

    Example:
        >>> s = RooflineSchedule(wait=2, warmup=1, active=2, every_n_steps=10)
        >>> [s.window_start(k) for k in range(3)]
        [2, 12, 22]
    """

    wait: int = 2
    warmup: int = 1
    active: int = 2
    every_n_steps: Optional[int] = None

    def __post_init__(self) -> None:
        for name, low in (("wait", 0), ("warmup", 0), ("active", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Roofline({name}={value!r}): expected an int >= {low}, e.g. {name}=2")
        n = self.every_n_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < self.length):
            raise ValueError(
                f"Roofline(every_n_steps={n!r}): expected None (profile once) or an int >= warmup + active "
                f"= {self.length}, so that windows do not overlap"
            )

    @property
    def length(self) -> int:
        """Steps in one window: ``warmup + active``."""
        return self.warmup + self.active

    def window_start(self, index: int) -> Optional[int]:
        """First step of window ``index`` (0-based); ``None`` when there is no such window."""
        if index == 0:
            return self.wait
        if self.every_n_steps is None:
            return None
        return self.wait + index * self.every_n_steps


# ----------------------------------------------------------------------------- the window


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _Window:
    """One profiling window: the profiler, the closure range and the step count.

    ``kind``: ``"train"`` (optimizer steps; Lightning's closure gets a forward range) or
    ``"val"`` (validation batches, forward only).
    """

    def __init__(self, profiler: Any, start_step: int, length: int, kind: str = "train",
                 trace_path: Optional[str] = None) -> None:
        self.profiler = profiler
        self.trace_path = trace_path  # where the profiler exports its trace (export_trace=True)
        self.start_step = start_step
        self.length = length
        self.kind = kind
        self.steps_done = 0
        self._hook: Any = None

    def open(self) -> None:
        import torch.optim.optimizer as optim

        self.profiler.__enter__()
        try:
            if self.kind == "train":
                self._hook = optim.register_optimizer_step_pre_hook(_range_the_closure)
        except BaseException:
            self.profiler.__exit__(None, None, None)
            raise

    def step(self) -> bool:
        """Mark one optimizer step; ``True`` once the window is complete."""
        self.steps_done += 1
        self.profiler.step()
        return self.steps_done >= self.length

    def close(self, exc: Optional[BaseException] = None) -> None:
        try:
            if exc is None:
                self.profiler.__exit__(None, None, None)
            else:
                self.profiler.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None


def _range_the_closure(optimizer: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Any]]:
    """Optimizer-step pre-hook: run Lightning's closure inside a forward phase range.

    Lightning runs ``training_step`` and ``backward`` inside ``optimizer.step(closure)``,
    which torch records as ``Optimizer.step#…``; without this range every forward op of
    the step would be read as optimizer work.
    """
    closure = kwargs.get("closure")
    if closure is None and args:
        closure, args = args[0], args[1:]
    if closure is None:
        return None

    def ranged() -> Any:
        with phase_range("forward"):
            return closure()

    return tuple(args), {**kwargs, "closure": ranged}
