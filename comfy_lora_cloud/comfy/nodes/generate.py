"""The Remote Generate node: a workflow, a LoRA and a prompt rendered on the remote session's
ComfyUI (a rented GPU), its images returned into this graph. With it a user without a GPU runs one
graph: photos -> LoRA -> images.

A thin shell over ``app.sessions.generate_watched``: the node's own loop polls ComfyUI's progress
bar and Cancel while the generation runs as a task, so the event loop is never blocked; Cancel
interrupts the prompt on the remote side (the session itself goes on until its idle minutes).
"""

from __future__ import annotations

import asyncio

from comfy_api.latest import io

from ...service.sessions import SessionRequest, decode_output_images
from ...service.templates import resolve_workflow
from ..wiring import holder
from .plumbing import CATEGORY, interrupted, progress_bar


def _to_image_batch(images: list[tuple[str, bytes]]):
    """``(name, PNG/JPEG/WebP bytes)`` -> ComfyUI's IMAGE (a float tensor [B, H, W, 3] in 0..1);
    images of another size than the first are left out (a batch has one size). Any other format
    or an oversized one (or batch) is a ComfyUIError (:func:`decode_output_images`)."""
    import numpy as np
    import torch

    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in decode_output_images(images)]
    if not arrays:
        return torch.zeros((1, 64, 64, 3), dtype=torch.float32), 0
    first = arrays[0].shape
    same = [a for a in arrays if a.shape == first]
    return torch.from_numpy(np.stack(same)), len(arrays) - len(same)


class LoraCloudRemoteGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudRemoteGenerate",
            display_name="LoRA Cloud: Remote Generate",
            category=f"{CATEGORY}/generate",
            description="Render a workflow on your remote ComfyUI session (a rented GPU) with a LoRA and a prompt, "
                        "and bring its images into this graph. Cancel interrupts the remote prompt; the session "
                        "stops itself after its idle minutes.",
            inputs=[
                io.String.Input("workflow", multiline=True, default="basic_txt2img",
                                tooltip="A template name (basic_txt2img, lora_comparison, batch_generation, ...), "
                                        "or a workflow's JSON as ComfyUI saves it (or in its API format) with a "
                                        "LoRA loader and a prompt."),
                io.String.Input("lora_name", default="",
                                tooltip="A LoRA in your bucket (or Await LoRA's output); empty: the workflow's own."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The positive prompt; empty: the workflow's own."),
                io.Int.Input("seed", default=-1, min=-1, max=2**53,
                             tooltip="Every sampler's seed; -1: the workflow's own."),
                io.Boolean.Input("start_session", default=True,
                                 tooltip="Rent a GPU for the remote ComfyUI when no session is running (it "
                                         "stops itself after 20 idle minutes, and at the session_max_hours "
                                         "setting, 4 hours by default)."),
            ],
            outputs=[io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, workflow: str, lora_name: str, prompt: str, seed: int,
                      start_session: bool) -> io.NodeOutput:
        app = await asyncio.to_thread(holder.get_blocking)
        lora = lora_name.strip() or None
        wf = resolve_workflow(workflow, lora=lora, prompt=prompt.strip() or None, seed=None if seed < 0 else seed)
        result = await app.sessions.generate_watched(
            wf, lora=lora, progress=progress_bar(cls.hidden.unique_id), interrupted=interrupted,
            start=SessionRequest() if start_session else None)
        batch, skipped = await asyncio.to_thread(_to_image_batch,
                                                 [(img.filename, img.data) for img in result.images])
        text = f"{len(result.images)} image(s) from session {result.session} in {result.seconds} s"
        if result.ignored:
            text += f" (left out, the remote lacks them: {', '.join(result.ignored)})"
        if skipped:
            text += f" ({skipped} of another size left out)"
        return io.NodeOutput(batch, ui={"text": [text]})
