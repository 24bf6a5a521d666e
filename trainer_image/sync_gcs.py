"""Copy a folder to or from the bucket, checksum-verified (the package's storage layer).

    python sync_gcs.py up LOCAL_DIR PREFIX      e.g. up /workspace/output runs/abc/output
    python sync_gcs.py down PREFIX LOCAL_DIR     e.g. down models/ /workspace/models
(storage: LORA_CLOUD_STORAGE, gs://bucket[/prefix] or a folder)
"""

import sys
from pathlib import Path

from comfy_lora_cloud.errors import LoraCloudError
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.storage.landing import iter_files


def up(storage, local: Path, prefix: str) -> int:
    files = list(iter_files(local))
    for path in files:
        storage.upload_file(path, f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}")
    return len(files)


def down(storage, prefix: str, local: Path) -> int:
    prefix = prefix.rstrip("/") + "/"
    objects = storage.list(prefix).objects
    for obj in objects:
        storage.download_file(obj.key, local / obj.key[len(prefix):])
    return len(objects)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("up", "down"):
        sys.exit(__doc__)
    try:
        storage = open_storage()
        n = up(storage, Path(sys.argv[2]), sys.argv[3]) if sys.argv[1] == "up" else \
            down(storage, sys.argv[2], Path(sys.argv[3]))
        print(f"{n} files copied")
    except LoraCloudError as exc:
        sys.exit(f"error: {exc.message}")
