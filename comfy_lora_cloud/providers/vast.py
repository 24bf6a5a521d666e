"""vast.ai as a Provider: :class:`VastProvider`, the Provider verbs over our records.

It is built on :class:`~.vast_client.VastClient` (the REST API over httpx, with its retries and
the create that never doubles) and :mod:`.vast_records` (vast.ai's rows read into our records and
our offer request written as its filter). The client and the record functions are imported from
here by the rest of the pack (``from ..providers.vast import VastClient, VastProvider``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ProviderAPIError, ProviderError
from ..models import Instance, InstanceState, Offer
from .base import LABEL_PREFIX, Capability, LaunchSpec, OfferRequest, run_id_from_label, session_id_from_label
from .vast_client import DEFAULT_URL, MAX_CHARGE_PAGES, MAX_PAGES, PAGE_LIMIT, VastClient
from .vast_records import ChargeReport, instance_from_vast, offer_from_vast, offer_query, parse_charges

__all__ = [
    "DEFAULT_URL", "MAX_CHARGE_PAGES", "MAX_PAGES", "PAGE_LIMIT", "ChargeReport", "VastClient", "VastProvider",
    "client_from_settings", "instance_from_vast", "offer_from_vast", "offer_query", "parse_charges",
]

log = logging.getLogger(__name__)


class VastProvider:
    """The Provider verbs on vast.ai."""

    name = "vast"
    capabilities = frozenset({Capability.STOP, Capability.INTERRUPTIBLE, Capability.LOGS, Capability.SSH,
                              Capability.SELF_DESTROY, Capability.BILLING})

    def __init__(self, client: VastClient):
        self.client = client
        self.account = client  # the same API client answers for the account

    async def search(self, req: OfferRequest) -> list[Offer]:
        rows = await self.client.search_offers(offer_query(req))
        return [offer_from_vast(r, req.interruptible) for r in rows]

    async def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        env = dict(spec.env)
        for port in spec.ports:
            env[f"-p {port}:{port}"] = "1"
        price = spec.bid
        if spec.interruptible and price is None:
            price = float(offer.min_bid or offer.dph_total)
        created = await self.client.create_instance(
            offer.id, image=spec.image, label=spec.label, disk_gb=spec.disk_gb, env=env, onstart=spec.onstart,
            price=price if spec.interruptible else None, runtype=spec.runtype)
        iid = created.get("new_contract")
        if iid is None:
            raise ProviderError(f"vast.ai accepted the create on offer {offer.id} but returned no instance id")
        try:
            row = await self.client.get_instance(iid)
        except ProviderAPIError:  # the instance exists; a failed read must not fail the launch
            row = None
        if row is None:
            return Instance(id=str(iid), label=spec.label, state=InstanceState.CREATING, gpu_name=offer.gpu_name,
                            dph_total=offer.dph_total, run_id=run_id_from_label(spec.label),
                            session_id=session_id_from_label(spec.label),
                            interruptible=spec.interruptible)
        return instance_from_vast(row)

    async def get(self, instance_id: str) -> Instance | None:
        row = await self.client.get_instance(instance_id)
        return instance_from_vast(row) if row else None

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        rows = await self.client.list_instances()
        out = []
        for r in rows:
            if not str(r.get("label") or "").startswith(label_prefix):
                continue
            if r.get("id") in (None, ""):
                log.warning("vast.ai listed an instance without an id (label %r); skipped", r.get("label"))
                continue
            out.append(instance_from_vast(r))
        return out

    async def stop(self, instance_id: str) -> None:
        await self.client.stop(instance_id)

    async def destroy(self, instance_id: str) -> bool:
        existed = await self.client.destroy(instance_id)
        if await self.client.get_instance(instance_id) is not None:
            raise ProviderError(f"instance {instance_id} still exists after destroy")
        return existed

    async def logs(self, instance_id: str, tail: int = 1000) -> str:
        return await self.client.logs(instance_id, tail)

    async def ensure_ssh_key(self, public_key: str) -> None:
        """Register ``public_key`` with the account (once): instances created afterwards accept it."""
        wanted = public_key.split()[:2]
        for key in await self.client.ssh_keys():
            text = str(key.get("public_key") or key.get("key") or "") if isinstance(key, dict) else ""
            if text.split()[:2] == wanted:
                return
        await self.client.add_ssh_key(public_key.strip())

    async def attach_ssh_key(self, instance_id: str, public_key: str) -> None:
        """Add ``public_key`` to a running instance (account keys reach only instances made after them)."""
        await self.client.attach_ssh_key(instance_id, public_key.strip())


def client_from_settings(settings: Any, **kwargs: Any) -> VastClient:
    """A client for the configured URL and key (ConfigError when no key is set)."""
    return VastClient(settings.vast_url, settings.secret("vast_api_key") or "", **kwargs)
