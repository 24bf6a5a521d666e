"""Datasets and LoRAs in storage: the library's public face, what the other packages and the
edges (routes, nodes, CLI) use. Inside, by responsibility:

* :mod:`.control`: :class:`Library`, the service every edge calls (coroutines; the work in threads);
* :mod:`.manifests`: a dataset's manifest, its record, the listing, may it be trained;
* :mod:`.datasets`: the one dataset upload, download and delete;
* :mod:`.loras`: the LoRA listing, the one LoRA download (and where it lands), delete;
* :mod:`.offload`: :class:`Offload`, where heavy transfers and a preparation run (a worker
  process inside ComfyUI); :mod:`.transfers`, what a dataset transfer needs of it;
* :mod:`.mirror` (``sync``), :mod:`.uploads` (the sidebar's staged uploads),
  :mod:`.captions`, :mod:`.prepare`, :mod:`.models_cache`, :mod:`.hub`, :mod:`.listings`,
  :mod:`.media`, :mod:`.files`, :mod:`.dataset_use`;
* :mod:`.views`: the typed records the services answer with (the routes send their
  ``to_dict()``, the CLI reads their attributes).

Names are loaded on first use, not when the package is: the offload worker is started as
``python -m comfy_lora_cloud.service.library.offload``, and a package that imported its own
``offload`` on the way would leave Python two copies of that module (and a warning).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: each public name and the module (in this package) that defines it; ``__all__`` lists the same
#: names (tests/service/test_library_package.py holds the two together)
_HOMES = {
    "Library": "control",
    "Mirror": "mirror", "normalise_prefix": "mirror",
    "Uploads": "uploads", "MAX_FILE_BYTES": "uploads",
    "Captions": "captions", "CaptionConflict": "captions",
    "ModelsCache": "models_cache",
    "Hub": "hub", "HttpHub": "hub",
    "Offload": "offload",
    "Transfers": "transfers", "IN_PROCESS": "transfers",
    "list_datasets": "manifests", "describe_dataset": "manifests",
    "require_trainable": "manifests",
    "UPLOAD_REMEDY": "datasets", "upload_dataset": "datasets", "download_dataset": "datasets",
    "delete_dataset": "datasets",
    "prepare_to_storage": "prepare",
    "COMFY_LORA_FOLDER": "loras", "comfy_lora_folder": "loras", "list_loras": "loras", "download_lora": "loras",
    "delete_lora": "loras", "read_lora_sidecar": "loras", "matches_object": "loras",
    "DatasetUser": "dataset_use", "live_runs_using": "dataset_use", "require_unused": "dataset_use",
    "Page": "listings", "read_records": "listings",
    "THUMB_SIZES": "files", "check_file_name": "files", "parse_safetensors_header": "files",
    "SAFE_HEADERS": "media", "MAX_IMAGE_BYTES": "media", "ImageSniffer": "media", "ServedFile": "media",
    "read_media": "media", "served_file": "media",
    # the records the library answers with (their to_dict() is the HTTP answer)
    "Caption": "views", "CaptionListing": "views", "CaptionedImage": "views", "DatasetDeleted": "views",
    "DatasetDownload": "views", "DatasetImage": "views", "DatasetListing": "views", "DatasetUpload": "views",
    "LibraryLora": "views", "LoraDeleted": "views", "LoraDownload": "views", "LoraListing": "views",
    "LoraMetadata": "views", "ModelsStatus": "views", "PreparedReview": "views", "Published": "views",
    "StagedFile": "views", "StagedPut": "views", "StagedRemoved": "views", "StagedUpload": "views",
    "StagingDiscarded": "views", "WeightFile": "views",
}
__all__ = [
    "COMFY_LORA_FOLDER", "Caption", "CaptionConflict", "CaptionListing", "CaptionedImage", "Captions",
    "DatasetDeleted", "DatasetDownload", "DatasetImage", "DatasetListing", "DatasetUpload", "DatasetUser",
    "HttpHub", "Hub", "IN_PROCESS", "ImageSniffer", "Library", "LibraryLora", "LoraDeleted", "LoraDownload",
    "LoraListing", "LoraMetadata", "MAX_FILE_BYTES", "MAX_IMAGE_BYTES", "Mirror", "ModelsCache", "ModelsStatus",
    "Offload", "Page", "PreparedReview", "Published", "SAFE_HEADERS", "ServedFile", "StagedFile", "StagedPut",
    "StagedRemoved", "StagedUpload", "StagingDiscarded", "THUMB_SIZES", "Transfers", "UPLOAD_REMEDY", "Uploads",
    "WeightFile", "check_file_name", "comfy_lora_folder", "delete_dataset", "delete_lora", "describe_dataset",
    "download_dataset", "download_lora", "list_datasets", "list_loras", "live_runs_using", "matches_object",
    "normalise_prefix", "parse_safetensors_header", "prepare_to_storage", "read_lora_sidecar", "read_media",
    "read_records", "require_trainable", "require_unused", "served_file", "upload_dataset",
]

if TYPE_CHECKING:
    from .captions import CaptionConflict, Captions
    from .control import Library
    from .dataset_use import DatasetUser, live_runs_using, require_unused
    from .datasets import UPLOAD_REMEDY, delete_dataset, download_dataset, upload_dataset
    from .files import THUMB_SIZES, check_file_name, parse_safetensors_header
    from .hub import HttpHub, Hub
    from .listings import Page, read_records
    from .loras import (COMFY_LORA_FOLDER, comfy_lora_folder, delete_lora, download_lora, list_loras,
                        matches_object, read_lora_sidecar)
    from .manifests import describe_dataset, list_datasets, require_trainable
    from .media import MAX_IMAGE_BYTES, SAFE_HEADERS, ImageSniffer, ServedFile, read_media, served_file
    from .mirror import Mirror, normalise_prefix
    from .models_cache import ModelsCache
    from .offload import Offload
    from .prepare import prepare_to_storage
    from .transfers import IN_PROCESS, Transfers
    from .uploads import MAX_FILE_BYTES, Uploads
    from .views import (Caption, CaptionedImage, CaptionListing, DatasetDeleted, DatasetDownload, DatasetImage,
                        DatasetListing, DatasetUpload, LibraryLora, LoraDeleted, LoraDownload, LoraListing,
                        LoraMetadata, ModelsStatus, PreparedReview, Published, StagedFile, StagedPut, StagedRemoved,
                        StagedUpload, StagingDiscarded, WeightFile)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # a submodule (``from . import offload``) is then imported as one
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
