"""ComfyUI workflows as data: the graph builder (:mod:`.graph`) and the six templates
(:mod:`.templates`). Pure Python, no I/O: the service (:mod:`comfy_lora_cloud.service.templates.catalog`)
fills them in and queues them; ``example_workflows/build_templates.py`` writes them to files.
"""

from .graph import Graph, Port
from .templates import MODEL_FILES, NAMES, TEMPLATES, Template, default_prompt, split_prompts

__all__ = ["Graph", "MODEL_FILES", "NAMES", "Port", "TEMPLATES", "Template", "default_prompt", "split_prompts"]
