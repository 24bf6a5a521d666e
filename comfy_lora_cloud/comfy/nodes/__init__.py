"""The pack's nodes (ComfyUI V3 API), one module per noun: :mod:`.datasets` (photos into a
dataset in the bucket), :mod:`.training` (Launch, Await LoRA, the Cloud LoRA Loader),
:mod:`.generate` (Remote Generate), :mod:`.templates` (Prompt List). What they share with ComfyUI
is :mod:`.plumbing` and :mod:`.sockets`; :mod:`.runs` is the training nodes' translation of their
inputs and outputs, importable without ComfyUI.

Each node is a thin shell over the pack's one :class:`App` (``comfy/wiring.py``, shared with the
routes and the background loop): the training nodes call its nouns (``app.runs``, ``app.library``)
as the CLI and the routes do, the dataset nodes its image-folder steps
(:mod:`comfy_lora_cloud.service.graph`). A node reads its inputs,
hands ComfyUI's progress bar and interrupt flag to the step as plain callables, runs blocking
work in a thread and lets a :class:`LoraCloudError` propagate so ComfyUI shows its message.
No node takes a secret as an input: keys live in the lora-cloud home (``lora-cloud config``).

The node modules import ComfyUI's ``comfy_api`` at the top, so they are imported only here, when
ComfyUI asks for the nodes: the package itself (and :mod:`.runs`) stays importable without it.
"""

from __future__ import annotations

from typing import Any


def all_nodes() -> list[Any]:
    """Every node the pack offers (``io.ComfyNode`` classes), in the order ComfyUI lists them."""
    from .datasets import (LoraCloudCaption, LoraCloudCropForTraining, LoraCloudLoadDataset, LoraCloudLoadImages,
                           LoraCloudPreviewDataset, LoraCloudRemoveBackground, LoraCloudSaveDataset)
    from .generate import LoraCloudRemoteGenerate
    from .templates import LoraCloudPromptList
    from .training import LoraCloudAwaitLora, LoraCloudLaunchTrainer, LoraCloudLoraLoader

    return [LoraCloudLoadImages, LoraCloudCropForTraining, LoraCloudRemoveBackground, LoraCloudCaption,
            LoraCloudPreviewDataset, LoraCloudSaveDataset, LoraCloudLoadDataset, LoraCloudLaunchTrainer,
            LoraCloudAwaitLora, LoraCloudLoraLoader, LoraCloudPromptList, LoraCloudRemoteGenerate]
