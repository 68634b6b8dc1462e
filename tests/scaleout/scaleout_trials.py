"""A probe model for trials on a Ray cluster: what each trial records about where it ran.

The Ray workers of a test study import this module through the job's runtime environment
(``worker_process_setup_hook``, see ``test_ray_cluster.py``) and so know the timm model
``scale_vit_probe``: a 2-block ViT for the 8x8 digits. Building it (once per trial, per worker
of a distributed trial; a trial handed a copy of a cached model records at its first forward
pass instead) and running it record, in ``SCALE_RECORDS``:

* ``<id>.start.json``: the Ray node, the worker's ``CUDA_VISIBLE_DEVICES`` and Ray GPU ids,
  the process, the wall-clock start;
* ``<id>.run.json`` (rewritten at each forward pass): the device the model's weights are on
  and the wall-clock time of the last forward pass, the trial's end as far as this test cares.

Two waits make the states the tests check certain whatever the machine's load, each bounded:

* a barrier: a trial's first forward pass waits until ``SCALE_BARRIER`` trials have started
  (``barrier_met`` says whether they did), so trials that can run at once do;
* a hold: while the file ``SCALE_HOLD`` names does not exist, forward passes wait (for the
  node-death test, which removes a node while its trial is held).
"""
from __future__ import annotations

import json
import os
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

BOUND_S = float(os.environ.get("SCALE_BOUND_S", "240"))
#: the probe models that recorded their trial's start in this process (copies are not in it)
_RECORDED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _records() -> Path | None:
    value = os.environ.get("SCALE_RECORDS")
    return Path(value) if value else None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _wait(condition, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def setup() -> None:
    """The workers' setup hook: register the probe model with timm."""
    import svite_search.models  # noqa: F401  (the torchvision import guard runs before timm)
    import torch
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    class ProbeViT(VisionTransformer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.barrier_done = False
            self._record_start()

        def _started_here(self) -> bool:
            """Whether this object recorded its trial's start: a copy of a cached model (the harness
            hands later trials in a reused worker one) did not run ``__init__``, so its first forward
            pass records the start instead. Kept by identity in a weak set, not as ``id(self)`` in
            an attribute: a copy inherits the attribute, and once the model that recorded is freed
            CPython may give the copy the same id, so the copy's trial went unrecorded."""
            return self in _RECORDED

        def _record_start(self) -> None:
            import ray

            self.probe_id = uuid.uuid4().hex
            _RECORDED.add(self)
            self.barrier_done = False
            records = _records()
            if records is None:
                return
            context = ray.get_runtime_context()
            _write(records / f"{self.probe_id}.start.json", {
                "node_id": context.get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "pid": os.getpid(),
                "start": time.time(),
            })

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            records = _records()
            if records is not None:
                if not self._started_here():
                    self._record_start()
                hold = os.environ.get("SCALE_HOLD")
                if hold:
                    _wait(lambda: os.path.exists(hold), BOUND_S)
                met = None
                if not self.barrier_done:
                    wanted = int(os.environ.get("SCALE_BARRIER", "0"))
                    met = _wait(lambda: len(list(records.glob("*.start.json"))) >= wanted, BOUND_S)
                    self.barrier_done = True
                path = records / f"{self.probe_id}.run.json"
                data = json.loads(path.read_text()) if path.exists() else {}
                if met is not None:
                    data["barrier_met"] = met
                data.update(device=next(self.parameters()).device.type, last=time.time())
                _write(path, data)
            return super().forward(x)

    @register_model
    def scale_vit_probe(pretrained: bool = False, **kwargs: Any) -> ProbeViT:
        import inspect

        accepted = inspect.signature(VisionTransformer.__init__).parameters
        shape = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
        shape.update({k: v for k, v in kwargs.items() if k in accepted})
        return ProbeViT(**shape)


if __name__ == "__main__":  # ``python scaleout_trials.py ARGS``: svite-search ARGS, the probe model known
    setup()
    from svite_search.cli import main

    raise SystemExit(main())
