"""The pack's own socket types, which link its nodes: images being prepared, a saved dataset, a
started run. Apart from the node modules because one noun's node outputs what another's takes
(Save Dataset's dataset is Launch's input)."""

from __future__ import annotations

from comfy_api.latest import io

IMAGES = io.Custom("LORA_CLOUD_IMAGES")
DATASET = io.Custom("LORA_CLOUD_DATASET")
RUN = io.Custom("LORA_CLOUD_RUN")
