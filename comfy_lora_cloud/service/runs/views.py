"""What the runs package answers with: frozen, typed records that the edges read by attribute.

Each record's ``to_dict()`` is the JSON the routes answer with, the CLI's ``--json`` prints and the
run event carries. The sidebar (``web/*.js``) reads those keys, so a ``to_dict`` keeps the keys,
the nesting and the nulls of that JSON exactly, including the keys a view leaves out when it has
nothing to say (a run with no status has no ``step``).

Trainer events (:attr:`RunEvents.events`) and a run's resolved config (:attr:`RunConfig.config`)
stay mappings: their keys are open-ended (each event kind carries its own fields, each preset its
own settings), written by a trainer or a preset rather than by this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...models import Problem, RunState, RunStatus
from .attempts import RunHistory

if TYPE_CHECKING:
    from ...providers.pricing import Pick
    from ...training.estimate import Estimate
    from ...training.presets import StepPlan
    from .preflight import Readiness


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in problems]


# ---- a run as every edge shows it ------------------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """One run: this home's record merged with what its trainer reports (see ``Runs.get``).

    ``provider`` is set only for a run launched from this home (its record says where), and
    ``updated_at`` only when a record or a status says when; the progress fields (``step`` to
    ``message``) come from ``status`` and are in the JSON only when there is one. ``samples``,
    ``problems`` and ``attempts`` are a single run's detail (``Runs.get``), not a listing's."""

    id: str
    state: RunState
    live: bool
    cost_usd: float
    dataset: str | None = None
    preset: str | None = None
    lora_name: str | None = None
    gpu: str = ""
    dph: float = 0.0
    instance_id: str | None = None
    created_at: float | None = None
    error: str | None = None
    provider: str | None = None
    updated_at: float | None = None
    status: RunStatus | None = None
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    sec_per_step: float | None = None
    message: str = ""
    samples: tuple[str, ...] | None = None
    problems: tuple[Problem, ...] | None = None
    attempts: RunHistory | None = None

    @property
    def launched_here(self) -> bool:
        return self.provider is not None

    def to_dict(self) -> dict[str, Any]:
        # the key order of the view as it was first written: the record's keys, then the status's
        out: dict[str, Any] = {"id": self.id, "dataset": self.dataset, "preset": self.preset,
                               "lora_name": self.lora_name, "gpu": self.gpu, "dph": self.dph,
                               "instance_id": self.instance_id, "created_at": self.created_at, "error": self.error}
        if self.launched_here:
            out.update(state=self.state.value, provider=self.provider, updated_at=self.updated_at)
        out["status"] = self.status.to_dict() if self.status is not None else None
        if self.status is not None:
            out.update(state=self.state.value, step=self.step, total_steps=self.total_steps, loss=self.loss, eta_seconds=self.eta_seconds,
                       sec_per_step=self.sec_per_step, message=self.message, updated_at=self.updated_at)
        out.update(state=self.state.value, live=self.live, cost_usd=self.cost_usd)
        if self.samples is not None:
            out["samples"] = list(self.samples)
        if self.problems is not None:
            out["problems"] = _problems(self.problems)
        if self.attempts is not None:
            out["attempts"] = self.attempts.to_dict()
        return out


@dataclass(frozen=True)
class RunPage:
    """One page of the runs, newest first, and the run folders that could not be read."""

    runs: tuple[RunView, ...]
    problems: tuple[Problem, ...]
    total: int
    offset: int
    limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "problems": _problems(self.problems),
                "total": self.total, "offset": self.offset, "limit": self.limit}


@dataclass(frozen=True)
class StatusPage:
    """One page of the statuses the trainers reported, newest launched first."""

    statuses: tuple[RunStatus, ...]
    problems: tuple[Problem, ...]
    total: int
    offset: int
    limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"statuses": [s.to_dict() for s in self.statuses], "problems": _problems(self.problems),
                "total": self.total, "offset": self.offset, "limit": self.limit}


@dataclass(frozen=True)
class RunEvents:
    """A run's events from an index on, and the index to ask for next time."""

    events: tuple[Mapping[str, Any], ...]
    next: int

    def to_dict(self) -> dict[str, Any]:
        return {"events": [dict(e) for e in self.events], "next": self.next}


@dataclass(frozen=True)
class SampleListing:
    """A run's sample images a route can serve, and the files left out."""

    samples: tuple[str, ...]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"samples": list(self.samples), "problems": _problems(self.problems)}


@dataclass(frozen=True)
class StopResult:
    """A run stopped on the user's word: its state after, and the instances destroyed for it."""

    run_id: str
    state: RunState
    destroyed_instances: tuple[str, ...]

    @property
    def destroyed(self) -> bool:
        return bool(self.destroyed_instances)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.run_id, "run_id": self.run_id, "state": self.state.value,
                "destroyed_instances": list(self.destroyed_instances), "destroyed": self.destroyed}


# ---- planning ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanFiles:
    """The files ``train plan`` wrote (paths as text: they are shown, not opened here)."""

    train: str
    dataset: str
    prompts: str | None
    spec: str

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "dataset": self.dataset, "prompts": self.prompts, "spec": self.spec}


@dataclass(frozen=True)
class RunPlan:
    """What ``train plan`` found: the preset and tier, the steps, the estimate (and where its price
    came from), the offer book's pick, the files written, the trainer's command and the dataset
    checks. ``offer`` is vast.ai's pick now, only when asked (``--live``)."""

    preset: str
    tier_gb: int
    steps: StepPlan
    estimate: Estimate
    priced_from: str
    book_offer: Pick | None
    files: PlanFiles
    command: str
    prep: dict[str, Any]
    checks: Readiness | None = None
    offer: Pick | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "preset": self.preset, "tier_gb": self.tier_gb, "plan": self.steps.to_dict(),
            "estimate": {**self.estimate.to_dict(), "priced_from": self.priced_from},
            "book_offer": self.book_offer.to_dict() if self.book_offer is not None else None,
            "files": self.files.to_dict(), "command": self.command, "prep": self.prep,
            "checks": self.checks.to_dict() if self.checks is not None else None}
        if self.offer is not None:
            out["offer"] = self.offer.to_dict()
        return out


# ---- a run's outputs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLog:
    """The last lines of a run's trainer log, cleaned for printing."""

    run_id: str
    lines: tuple[str, ...]
    total_lines: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "lines": list(self.lines), "total_lines": self.total_lines}


@dataclass(frozen=True)
class SamplesDownload:
    """A run's samples brought into ``dir``: every one there, those downloaded now, those skipped."""

    run_id: str
    dir: Path
    samples: tuple[str, ...]
    downloaded: tuple[str, ...]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dir": str(self.dir), "samples": list(self.samples),
                "downloaded": list(self.downloaded), "problems": _problems(self.problems)}


# ---- the config editor ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldError:
    """One editor field the checks refused (``field`` empty: the config as a whole)."""

    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class EditorValues:
    """The editor's four fields, as a preset resolves them (a preset's own type each)."""

    rank: Any
    learning_rate: Any
    steps: int
    resolution: Any

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "learning_rate": self.learning_rate, "steps": self.steps,
                "resolution": self.resolution}


@dataclass(frozen=True)
class PresetDefaults:
    """A preset and its editor values for a typical dataset of its type."""

    name: str
    description: str
    images: int
    defaults: EditorValues

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "images": self.images,
                "defaults": self.defaults.to_dict()}


@dataclass(frozen=True)
class EditorPresets:
    """What the config editor opens with: the presets, its fields, the GPUs it prices, their limits."""

    presets: tuple[PresetDefaults, ...]
    fields: tuple[str, ...]
    gpus: tuple[str, ...]
    default_gpu: str
    limits: Mapping[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"presets": [p.to_dict() for p in self.presets], "fields": list(self.fields),
                "gpus": list(self.gpus), "default_gpu": self.default_gpu,
                "limits": {f: list(low_high) for f, low_high in self.limits.items()}}


@dataclass(frozen=True)
class ConfigCheck:
    """An edited config checked and estimated. ``values``, ``plan`` and ``estimate`` are there only
    when it passed (``ok``)."""

    ok: bool
    errors: tuple[FieldError, ...]
    lora_type: str
    images: int
    defaults: EditorValues
    overrides: Mapping[str, Any]
    trigger: str | None
    gpu: str
    values: EditorValues | None = None
    plan: StepPlan | None = None
    estimate: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "errors": [e.to_dict() for e in self.errors],
                               "lora_type": self.lora_type, "images": self.images,
                               "defaults": self.defaults.to_dict(), "overrides": dict(self.overrides),
                               "trigger": self.trigger, "gpu": self.gpu}
        if self.values is not None:
            out["values"] = self.values.to_dict()
        if self.plan is not None:
            out["plan"] = self.plan.to_dict()
        if self.estimate is not None:
            out["estimate"] = self.estimate.to_dict()
        return out


@dataclass(frozen=True)
class RunConfig:
    """A run's config resolved as the trainer resolves it, flat (``section.key`` past training's
    own keys); a ``problem`` key says why it could not be resolved in full."""

    run_id: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "config": dict(self.config)}
