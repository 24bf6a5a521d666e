"""Pull a dataset from the bucket into a folder and check it, as the trainer does before kohya.

    python prepare_dataset.py DATASET [DEST]     (storage: LORA_CLOUD_STORAGE)
"""

import sys
from pathlib import Path

from comfy_lora_cloud.errors import LoraCloudError
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.worker.dataset_pull import check_local_dataset, pull_dataset

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    dest = Path(sys.argv[2] if len(sys.argv) == 3 else "/workspace/dataset")
    try:
        pull_dataset(open_storage(), sys.argv[1], dest)
        print(f"{len(check_local_dataset(dest))} images ready in {dest}")
    except LoraCloudError as exc:
        sys.exit(f"error: {exc.message}")
