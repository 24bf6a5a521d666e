"""Where GPUs come from: one Provider protocol, a few verbs over the records in ``models.py``.

A provider searches offers, launches an instance from one with a :class:`LaunchSpec`, reads
instances back (one or all of ours), stops, destroys and fetches logs. What a provider cannot do
is declared in ``capabilities`` so callers check up front instead of catching
``NotImplementedError`` deep inside a launch.

Every instance we create carries a label naming its run (:func:`run_label`); the label is how a
restarted controller finds its instances again, so it is the only link reconcile relies on.

Every label this pack makes, in any version, is ``lora-cloud:<run id>`` or
``lora-cloud:session:<session id>`` with an id that passes ``models.validate_name``: a home reads
any other ``lora-cloud:`` label as naming no run at all (one it may destroy), so a new form must
stay inside these two. That is why the bucket an instance belongs to travels in the id itself:
ids made from now on end with ``.b<bucket id>`` (:func:`with_bucket_tag`, the id of
``storage/identity.py``, which says nothing about the bucket's name), and an older home that
shares the bucket still reads the whole id as the run's and finds it in ``runs/<id>/`` as before.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..models import Instance, Offer, Record

LABEL_PREFIX = "lora-cloud:"


def run_label(run_id: str) -> str:
    """The label every instance of ``run_id`` carries."""
    return f"{LABEL_PREFIX}{run_id}"


def run_id_from_label(label: str | None) -> str | None:
    """The run an instance belongs to, or None when it is not one of ours (or a session's)."""
    if label and label.startswith(LABEL_PREFIX) and len(label) > len(LABEL_PREFIX) \
            and not label.startswith(SESSION_LABEL_PREFIX):
        return label[len(LABEL_PREFIX):]
    return None


SESSION_LABEL_PREFIX = f"{LABEL_PREFIX}session:"

_BUCKET_TAG = re.compile(r"\.b([0-9a-f]{12})\Z")


def with_bucket_tag(ident: str, bucket_id: str) -> str:
    """A run or session id that says which bucket it lives in (see the module docstring)."""
    return f"{ident}.b{bucket_id}"


def bucket_tag(ident: str | None) -> str | None:
    """The bucket id a run or session id carries, or None for an id made before tags (or not an
    id of ours at all)."""
    m = _BUCKET_TAG.search(ident) if isinstance(ident, str) else None
    return m.group(1) if m else None


def session_label(session_id: str) -> str:
    """The label of a remote ComfyUI session's instance (ours, so listed and guarded with the rest)."""
    return f"{SESSION_LABEL_PREFIX}{session_id}"


def session_id_from_label(label: str | None) -> str | None:
    if label and label.startswith(SESSION_LABEL_PREFIX) and len(label) > len(SESSION_LABEL_PREFIX):
        return label[len(SESSION_LABEL_PREFIX):]
    return None


class Capability(str, enum.Enum):
    STOP = "stop"  # stop keeps the disk; start resumes
    INTERRUPTIBLE = "interruptible"  # bid / spot instances
    LOGS = "logs"
    SSH = "ssh"
    SELF_DESTROY = "self_destroy"  # the container gets a key to destroy itself
    BILLING = "billing"  # charges can be read back from the provider


@dataclass
class OfferRequest(Record):
    """Hard constraints for an offer search. Sizes in GB, prices in $/hr."""

    gpu_names: list[str] = field(default_factory=list)
    min_vram_gb: float = 0.0
    min_ram_gb: float = 0.0
    min_disk_gb: float = 0.0
    min_reliability: float = 0.0
    verified: bool | None = True
    interruptible: bool = False
    max_dph: float | None = None
    min_inet_down_mbps: float = 0.0
    min_cuda: float | None = None
    regions: list[str] = field(default_factory=list)  # 2-letter country codes
    num_gpus: int = 1
    allocated_storage_gb: float = 0.0  # prices the disk part of dph_total
    limit: int = 1000


@dataclass
class LaunchSpec(Record):
    """What to run on a new instance.

    ``env`` is plain ``NAME: value``; ``ports`` become ``-p N:N`` requests. ``bid`` makes the
    instance interruptible at that $/hr; None with ``interruptible`` means "bid the offer's
    current minimum".
    """

    image: str
    label: str
    disk_gb: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    onstart: str | None = None
    interruptible: bool = False
    bid: float | None = None
    runtype: str = "ssh"
    ports: list[int] = field(default_factory=list)


class Account(Protocol):
    """A provider's account API, for a provider that bills an account (vast.ai): who the key
    belongs to, its SSH keys, and what it was charged."""

    async def current_user(self) -> dict[str, Any]:
        """The account the key belongs to (its name, its credit)."""

    async def ssh_keys(self) -> list[dict[str, Any]]:
        """The public keys registered with the account."""

    async def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """What each instance was charged between ``start`` and ``end``."""

    async def charge_report(self, start: float, end: float) -> Any:
        """:meth:`charges`, checked: the rows and whether the listing was complete."""


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: frozenset[Capability]
    account: Account | None  # None: nothing bills an account (the local provider)

    async def search(self, req: OfferRequest) -> list[Offer]:
        """Offers that meet every constraint in ``req`` (unordered)."""

    async def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        """Rent ``offer`` and start ``spec`` on it. Never creates two instances for one call."""

    async def get(self, instance_id: str) -> Instance | None:
        """The instance, or None once it is gone."""

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        """Every live instance whose label starts with ``label_prefix``."""

    async def stop(self, instance_id: str) -> None:
        """Stop (keep the disk). Only with Capability.STOP."""

    async def destroy(self, instance_id: str) -> bool:
        """Destroy and confirm by reading back. True when it existed."""

    async def logs(self, instance_id: str, tail: int = 1000) -> str:
        """The container's recent log lines."""
