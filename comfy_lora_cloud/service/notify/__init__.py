"""Notifications: the one home of "tell the user that something happened", on three channels,
each delivering on its own.

The hooks, in one place. A notice has a kind, and a key that names the happening; each key is
delivered at most once per channel, also across restarts and across processes sharing a home
(ComfyUI and the CLI)::

    kind            when                                                   key
    run_done        a run's state becomes done                             run:<id>:done
    run_failed      a run ends failed, timed_out or lost                   run:<id>:failed
    run_preempted   the guard's recovery found the run's GPU taken back    run:<id>:preempted:<count>
    run_resumed     ... and the instance came back, or the run moved       run:<id>:resumed:<instance>
    budget_80       a budget reached 80% (monthly: once a month)           budget:<budget>:<subject>:80
    budget_100      a budget reached 100%, or the watchdog enforced it     budget:<budget>:<subject>:100
    session_idle    a remote ComfyUI session stopped for idleness          session:<id>:idle

Where notices come from: :meth:`Notifier.observe` sees every event the services emit
(:meth:`App.emit <comfy_lora_cloud.service.app.App.emit>`) and the ones the pack's poller sends
(``comfy/events.py``), and maps them (:func:`notices_for`); code that knows of a happening no event
carries calls :meth:`Notifier.notice` (a session stopped for idleness: ``app.notify.notice(
"session_idle", f"session:{id}:idle", title, message)``, or emit :data:`SESSION_EVENT` with
``kind`` ``idle_stopped``). A run that ended more than a day ago is not news (a first start must
not announce every old run).

Channels, each turned off by its setting, each with its own bounded queue and thread
(:mod:`.worker`), so a slow channel delays only itself:

- ``toast`` (``notify_toast``): the ``lora_cloud.notify`` event through the app's sink; in ComfyUI
  that is a websocket broadcast, and the sidebar shows it as a toast in every open tab. Local
  only, so it is shown at once, whatever the webhook is doing;
- ``desktop`` (``notify_desktop``): the machine's own notifications (:mod:`.desktop`): silently
  skipped where there is no desktop;
- ``webhook`` (``notify_webhook``, when the ``webhook_url`` secret is set): a POST of JSON in the
  stable schema :data:`SCHEMA` (or a Slack / Discord body with ``webhook_format``), signed with
  HMAC-SHA256 (:mod:`.webhook`), each attempt under one total deadline, retried with the project's
  backoff, sent only to an address that passes :mod:`comfy_lora_cloud.addresses` (loopback and
  private networks need ``webhook_allow_private``). Nothing secret is in a body: titles and
  messages are built from names, states and numbers, and pass
  :func:`~comfy_lora_cloud.errors.redact`.

Exactly once: a notice is claimed per channel in the state store before it is delivered
(:mod:`.ledger`). A claim whose process died is delivered by the next notifier that starts: a
webhook receiver may see such a notice twice at most, with the same ``X-LoRA-Cloud-Delivery`` id
to drop it by.

Never on an event loop: :meth:`Notifier.observe` only queues; an intake thread reads events into
notices, and the channels' threads claim and deliver.
"""

from __future__ import annotations

from ..events import SESSION_EVENT
from .desktop import desktop_command
from .ledger import KV_PREFIX, STALE_CLAIM_S, Entry
from .notices import KINDS, SCHEMA, Notice, notices_for
from .notifier import CHANNELS, NOTIFY_EVENT, SETTING_KEYS, Delivery, Notifier
from .views import NotifySummary
from .webhook import WebhookPolicy, post_webhook, sign, webhook_body

__all__ = ["CHANNELS", "KINDS", "KV_PREFIX", "NOTIFY_EVENT", "SCHEMA", "SESSION_EVENT", "SETTING_KEYS",
           "STALE_CLAIM_S", "Delivery", "Entry", "Notice", "Notifier", "NotifySummary", "WebhookPolicy",
           "desktop_command", "notices_for", "post_webhook", "sign", "webhook_body"]
