"""Nodes the workflow templates need besides the LoRA loader (V3 API).

Prompt List turns a text box of prompts, one per line, into a list, so one graph renders every
prompt (``batch_generation``): ComfyUI runs the nodes after it once per item.
"""

from __future__ import annotations

from comfy_api.latest import io

from ...errors import ConfigError
from ...service.templates import split_prompts
from .plumbing import CATEGORY


class LoraCloudPromptList(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudPromptList",
            display_name="LoRA Cloud: Prompt List",
            category=f"{CATEGORY}/prompts",
            description="One prompt per line (blank lines and lines starting with # are skipped), each after the "
                        "prefix: the nodes it feeds run once per prompt.",
            inputs=[
                io.String.Input("text", multiline=True, default="portrait, natural light\nat the beach, golden hour",
                                tooltip="One prompt per line."),
                io.String.Input("prefix", default="", tooltip="Put before every prompt, e.g. the LoRA's trigger word."),
            ],
            outputs=[io.String.Output(display_name="prompts", is_output_list=True)],
        )

    @classmethod
    def execute(cls, text: str, prefix: str) -> io.NodeOutput:
        prompts = split_prompts(text, prefix)
        if not prompts:
            raise ConfigError("Prompt List has no prompt: write one per line")
        return io.NodeOutput(prompts)
