"""The pack's nodes (ComfyUI V3 API). Each node is a thin shell over ``service/``: it holds no
state, runs storage calls in a thread and lets a :class:`LoraCloudError` propagate so ComfyUI
shows its message."""

from __future__ import annotations

import asyncio

from comfy_api.latest import io

from ..service import library
from ..settings import Settings
from ..storage import open_storage
from .handles import DatasetHandle

DATASET = io.Custom("LORA_CLOUD_DATASET")
CATEGORY = "LoRA Cloud"


def _describe(name: str) -> DatasetHandle:
    storage = open_storage(settings=Settings.load())
    d = library.describe_dataset(storage, name)
    return DatasetHandle(name=d.name, storage_url=storage.url, images=d.images, captioned=d.captioned,
                         info=d.to_dict())


class LoraCloudLoadDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudLoadDataset",
            display_name="LoRA Cloud: Load Dataset",
            category=f"{CATEGORY}/dataset",
            description="Pick a dataset from your storage (bucket or local folder) by name.",
            inputs=[
                io.String.Input(
                    "dataset",
                    default="",
                    tooltip="Name of a dataset in storage (datasets/<name>/), e.g. one made with "
                            "`lora-cloud dataset upload DIR --name NAME`.",
                ),
            ],
            outputs=[
                DATASET.Output(display_name="dataset"),
                io.String.Output(display_name="summary"),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, dataset: str) -> float:
        return float("nan")  # storage may change between queues: always look again

    @classmethod
    async def execute(cls, dataset: str) -> io.NodeOutput:
        handle = await asyncio.to_thread(_describe, dataset.strip())
        summary = f"{handle.name}: {handle.images} images, {handle.captioned} captioned ({handle.storage_url})"
        return io.NodeOutput(handle, summary)


def all_nodes() -> list[type[io.ComfyNode]]:
    return [LoraCloudLoadDataset]
