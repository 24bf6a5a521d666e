"""Check a local dataset folder the way the trainer does: images, each with a non-empty caption.

    python validate_dataset.py FOLDER
"""

import sys
from pathlib import Path

from comfy_lora_cloud.errors import LoraCloudError
from comfy_lora_cloud.worker.dataset_pull import check_local_dataset

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        print(f"OK: {len(check_local_dataset(Path(sys.argv[1])))} captioned images")
    except LoraCloudError as exc:
        sys.exit(f"error: {exc.message}")
