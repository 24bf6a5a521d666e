"""The V3 extension: which nodes the pack offers. ``comfy_api`` is imported only when ComfyUI
calls :func:`comfy_entrypoint`, so this module is importable (and testable) without ComfyUI."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from ..settings import install_log_redaction
    from .nodes import all_nodes

    install_log_redaction()
    try:  # routes + live events; the nodes still load if this fails
        from .routes import install

        install()
    except Exception:
        log.warning("LoRA Cloud: the sidebar's routes could not be installed", exc_info=True)

    class LoraCloudExtension(ComfyExtension):
        async def get_node_list(self):
            return all_nodes()

    return LoraCloudExtension()
