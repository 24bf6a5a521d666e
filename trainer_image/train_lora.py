"""Run one training run (the image's entrypoint); everything is in comfy_lora_cloud.training."""

import sys

from comfy_lora_cloud.worker.entrypoint import main

if __name__ == "__main__":
    sys.exit(main())
