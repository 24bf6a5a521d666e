"""The training nodes' inputs and outputs, without ComfyUI (so tests import this, not training.py).

The work itself is the App's, as for the CLI and the routes: the Launch node builds a
:class:`TrainRequest` here and calls ``app.runs.start``; Await LoRA calls ``app.runs.fetch_lora``;
the Cloud LoRA Loader calls ``app.library.download_lora``. What is left for this module is the
translation a node needs: its inputs into the request ``train start`` builds, a start's result
into the :class:`RunRef` the Launch node hands to Await LoRA, and LoRA file names as ComfyUI's
loaders spell them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...models import RunStatus, validate_name
from ...service.graph import DatasetRef
from ...service.library import COMFY_LORA_FOLDER
from ...service.runs import StartResult, TrainRequest

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class RunRef:
    """A training run, as the Launch node hands it to Await LoRA."""

    run_id: str
    lora_name: str
    storage_url: str
    attached: bool = False
    summary: str = ""


#: the Launch node's "follow the settings" value of each preemption policy input (``train start``
#: leaves the option out): -1 minutes, 0 attempts, -1 preemptions
FROM_SETTINGS = {"resume_wait_minutes": -1.0, "max_attempts": 0, "on_demand_after": -1}


def launch_request(dataset: DatasetRef, *, lora_type: str, lora_name: str, trigger: str, gpu: str, provider: str,
                   interruptible: bool, max_usd: float, max_dph: float, max_hours: float,
                   resume_wait_minutes: float = -1.0, max_attempts: int = 0, on_demand_after: int = -1) -> TrainRequest:
    """The Launch node's inputs as the :class:`TrainRequest` ``train start`` builds: empty strings
    and ``auto`` are the defaults, and the preemption policy is the same per-run policy as
    ``--resume-wait/--max-attempts/--on-demand-after`` (service/runs/attempts.py:Policy), a
    :data:`FROM_SETTINGS` value standing for a left-out option (the settings'). A finished run of
    the same dataset and config counts (``reuse_finished``): a re-queued graph must not pay twice."""
    policy = {"resume_wait_minutes": resume_wait_minutes, "max_attempts": max_attempts,
              "on_demand_after": on_demand_after}
    return TrainRequest(dataset=dataset.name, lora_type=lora_type, lora_name=lora_name.strip() or None,
                        trigger=trigger.strip() or None, gpu=None if gpu == "auto" else gpu, provider=provider,
                        interruptible=interruptible, max_run_usd=max_usd, max_dph=max_dph, max_hours=max_hours,
                        reuse_finished=True,
                        **{k: None if v == FROM_SETTINGS[k] else v for k, v in policy.items()})


def run_ref(result: StartResult, storage_url: str) -> RunRef:
    """What the Launch node outputs for a start (or a re-attach). The summary ends with the
    dataset checks' warnings (service/runs/preflight.py), one ``warning:`` line each, as ``train
    start`` prints them."""
    if result.attached:
        summary = f"run {result.run_id} already exists ({result.state}): not renting again"
    else:
        cost = f", about ${result.expected_usd:.2f} expected" if result.expected_usd is not None else ""
        summary = (f"run {result.run_id}: {result.gpu} at ${result.dph:.3f}/hr{cost}; "
                   f"{result.plan.get('total_steps', '?')} steps")
    summary = "\n".join([summary, *(f"warning: {line}" for line in result.warnings)])
    return RunRef(result.run_id, result.lora_name, storage_url, result.attached, summary)


def step_progress(progress: Progress | None) -> Callable[[RunStatus], None] | None:
    """Await LoRA's progress bar over the training steps, fed by each new status."""
    if progress is None:
        return None

    def on_status(status: RunStatus) -> None:
        if status.total_steps:
            progress(min(status.step, status.total_steps), status.total_steps)

    return on_status


def comfy_lora_name(path: Path) -> str:
    """The name ComfyUI's LoRA loaders list a downloaded LoRA by (``lora_cloud/<n>.safetensors``)."""
    return f"{COMFY_LORA_FOLDER}/{path.name}"


def library_lora_name(name: str) -> str:
    """The Cloud LoRA Loader's ``lora_name`` (``lora_cloud/<n>.safetensors``, as Await LoRA
    outputs it, ``<n>.safetensors`` or ``<n>``) as the library names the LoRA."""
    stem = name.strip().removeprefix(f"{COMFY_LORA_FOLDER}/").removesuffix(".safetensors")
    return validate_name(stem, "LoRA name")
