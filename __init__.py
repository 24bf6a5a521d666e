"""ComfyUI entry point of the LoRA Cloud pack.

ComfyUI imports this file as a custom-node pack (install the repository as
``custom_nodes/comfy_lora_cloud``). All the code lives in the ``comfy_lora_cloud`` package next to
it; this file only makes that package importable under its real name (so worker processes and
pickling work) and hands ComfyUI the V3 entry point and the sidebar's web folder.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from comfy_lora_cloud.comfy.extension import comfy_entrypoint  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
