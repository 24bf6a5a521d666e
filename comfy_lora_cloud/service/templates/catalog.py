"""Workflow templates by name, filled in, and the one-click LoRA test.

The one home of "a template with a LoRA and a prompt filled in" (:func:`load_template`: the
API form that ``/prompt`` takes; :func:`ui_template`: the canvas form) and of testing a LoRA
(:meth:`Templates.test_lora`: ``lora-cloud lora test``, the sidebar's Test and Compare buttons).
``lora-cloud comfy run <template>`` (remote generation) calls :func:`load_template` too.

Where a test is queued (:meth:`Templates.target`): the URL asked for; else the remote session's
ComfyUI when one is live (``app.sessions.comfy_url()``, when the app has sessions); else the
ComfyUI the pack runs in (set by ``comfy/wiring.py``); else the ``comfyui_url`` setting.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...errors import ConfigError, ObjectNotFound, StorageError
from ...models import Record, validate_name
from ...settings import check_http_url
from ...storage import layout
from ...workflows import TEMPLATES, default_prompt, split_prompts
from .views import LoraTestStatus, TemplateInfo

if TYPE_CHECKING:  # the client (aiohttp) is imported by what queues, not by every command
    from ..core import Core
    from ...remote.comfyui import ComfyClient

__all__ = ["NAMES", "LoraTest", "Templates", "default_prompt", "describe_templates", "load_template",
           "split_prompts", "ui_template"]

NAMES = tuple(TEMPLATES)
TEST_TEMPLATE = "basic_txt2img"
COMPARE_TEMPLATE = "lora_comparison"
MAX_PROMPT = 2000
MAX_TESTS = 200  # prompt ids remembered for the image route


def _template(name: str):
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"no template named {name!r}; choose one of {', '.join(NAMES)}") from None


def _graph(name: str, lora: str | None, prompt: str | None, params: dict[str, Any]):
    t = _template(name)
    if lora is not None:
        params["lora"] = validate_name(lora, "LoRA name")
    if prompt is not None:
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
            raise ConfigError(f"the prompt must be text of at most {MAX_PROMPT} characters")
        params["prompt" if "prompt" in t.parameters else "prompts"] = (
            prompt if "prompt" in t.parameters else split_prompts(prompt))
    try:
        return t.graph(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def load_template(name: str, *, lora: str | None = None, prompt: str | None = None, **params: Any) -> dict[str, Any]:
    """Template ``name`` in API form (what ``POST /prompt`` takes) with ``lora`` in its LoRA slot
    and ``prompt`` as its prompt (``batch_generation``: one prompt per line). Other ``params``
    are the template's own (``seed``, ``steps``, ``image``, ``strengths``...; see
    :func:`describe_templates`). Unknown names and parameters raise :class:`ConfigError`."""
    return _graph(name, lora, prompt, dict(params)).api()


def ui_template(name: str, *, lora: str | None = None, prompt: str | None = None, **params: Any) -> dict[str, Any]:
    """The same, in the UI form ComfyUI's canvas opens (with notes, groups and positions)."""
    return _graph(name, lora, prompt, dict(params)).ui()


def describe_templates() -> list[TemplateInfo]:
    """Every template: name, title, what it does, its parameters and defaults, the packs it needs."""
    out = []
    for t in TEMPLATES.values():
        sig = inspect.signature(t.build)
        out.append(TemplateInfo(name=t.name, title=t.title, description=t.description, packs=tuple(t.packs),
                                takes_image=t.takes_image,
                                parameters={p: (None if v.default is inspect.Parameter.empty else v.default)
                                            for p, v in sig.parameters.items()}))
    return out


@dataclass
class LoraTest(Record):
    """A LoRA test queued on a ComfyUI."""

    prompt_id: str
    lora: str
    template: str
    prompt: str
    target: str


def _trigger_and_type(facts: dict[str, Any]) -> tuple[str, str]:
    """The trigger word and LoRA type from a sidecar (untrusted: wrong types are ignored)."""
    trigger = facts.get("trigger") if isinstance(facts.get("trigger"), str) else ""
    lora_type = facts.get("lora_type") if isinstance(facts.get("lora_type"), str) else "character"
    return trigger.strip()[:200], lora_type


class Templates:
    """The templates for every edge, and LoRA tests queued on a ComfyUI (``app.templates``)."""

    def __init__(self, core: Core, *, remote_comfy_url: Callable[[], Awaitable[str | None]] | None = None):
        self.core = core
        # the URL of a remote ComfyUI this home runs, if any: LoRA tests go there first
        self.remote_comfy_url = remote_comfy_url
        self.local_url: str | None = None  # the ComfyUI the pack runs in (comfy/wiring.py sets it)
        self._tests: dict[str, LoraTest] = {}

    names = NAMES
    describe = staticmethod(describe_templates)
    load = staticmethod(load_template)
    ui = staticmethod(ui_template)

    async def target(self, url: str | None = None) -> str:
        """The ComfyUI to queue on (see the module docstring)."""
        if url:
            try:
                return check_http_url(url, "the ComfyUI URL")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.remote_comfy_url is not None:
            found = await self.remote_comfy_url()
            if found:
                return str(found).rstrip("/")
        return self.local_url or self.core.settings.comfyui_url

    @staticmethod
    def client(url: str) -> ComfyClient:
        """A client for the ComfyUI at ``url``, for one ``async with`` on the caller's loop."""
        from ...remote.comfyui import ComfyClient

        return ComfyClient(url, remote=False, timeout=30.0)

    async def lora_facts(self, name: str) -> dict[str, Any]:
        """What the bucket says about a LoRA (its ``<name>.json``): trigger word and type for the
        prompt. :class:`ObjectNotFound` when there is no such LoRA."""
        from ..library import read_lora_sidecar

        validate_name(name, "LoRA name")
        storage = await asyncio.to_thread(lambda: self.core.storage)

        def read() -> dict[str, Any]:
            if not storage.exists(layout.lora_key(name)):
                raise ObjectNotFound(f"no LoRA named {name!r} in {storage.url}")
            try:
                return read_lora_sidecar(storage, layout.lora_meta_key(name))
            except ObjectNotFound:
                return {}
            except StorageError:  # an unreadable sidecar: test the LoRA anyway, with the default prompt
                return {}

        return await asyncio.to_thread(read)

    async def default_prompt_for(self, name: str) -> str:
        """The prompt a test of LoRA ``name`` starts from: its trigger word in a sentence for its
        type (the sidebar prefills it)."""
        trigger, lora_type = _trigger_and_type(await self.lora_facts(name))
        return default_prompt(trigger or name, lora_type)

    async def test_lora(self, name: str, *, prompt: str | None = None, compare: bool = False,
                        url: str | None = None, client_id: str | None = None, **params: Any) -> LoraTest:
        """Queue ``basic_txt2img`` (``compare``: ``lora_comparison``) with LoRA ``name`` and a
        prompt (default: :meth:`default_prompt_for`) on :meth:`target`."""
        trigger, lora_type = _trigger_and_type(await self.lora_facts(name))
        prompt = (prompt or "").strip() or default_prompt(trigger or name, lora_type)
        template = COMPARE_TEMPLATE if compare else TEST_TEMPLATE
        graph = load_template(template, lora=name, prompt=prompt, trigger=trigger or name,
                              filename_prefix=f"lora_cloud/tests/{name}", **params)
        target = await self.target(url)
        async with self.client(target) as comfy:
            prompt_id = await comfy.queue_prompt(graph, client_id=client_id)
        test = LoraTest(prompt_id, name, template, prompt, target)
        self._tests[prompt_id] = test
        while len(self._tests) > MAX_TESTS:
            self._tests.pop(next(iter(self._tests)))
        return test

    def _known(self, prompt_id: str) -> LoraTest:
        test = self._tests.get(prompt_id)
        if test is None:  # only tests this app queued: the routes never proxy arbitrary prompts
            raise ObjectNotFound(f"no LoRA test {prompt_id!r} was queued here")
        return test

    async def test_status(self, prompt_id: str) -> LoraTestStatus:
        """Where a test queued here is, and its images so far."""
        test = self._known(prompt_id)
        async with self.client(test.target) as comfy:
            status = await comfy.status(prompt_id)
        return LoraTestStatus(prompt_id=status.prompt_id, state=status.state, error=status.error,
                              images=tuple(status.images), lora=test.lora, template=test.template)

    async def test_image(self, prompt_id: str, index: int = 0) -> Any:
        """Image ``index`` of a finished test as the browser may get it (a :class:`~.media.ServedFile`)."""
        from ..library import MAX_IMAGE_BYTES, served_file

        test = self._known(prompt_id)
        async with self.client(test.target) as comfy:
            status = await comfy.status(prompt_id)
            if not 0 <= index < len(status.images):
                raise ObjectNotFound(f"test {prompt_id} has no image {index}")
            image = status.images[index]
            data = await comfy.view(image)
        if len(data) > MAX_IMAGE_BYTES:
            raise ObjectNotFound(f"image {image.filename!r} is too large to show")
        return served_file(data, image.filename)

    async def wait(self, prompt_id: str, *, timeout: float = 1800.0, poll: float = 0.5) -> LoraTestStatus:
        """Poll a test until it finishes (the CLI's ``--wait``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.test_status(prompt_id)
            if status.finished or loop.time() >= deadline:
                return status
            await asyncio.sleep(poll)
