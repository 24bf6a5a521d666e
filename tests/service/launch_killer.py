"""A controller killed between a launch's intent and its create call:

    python -m tests.service.launch_killer ARGS...

runs ``lora-cloud --json train start ARGS...`` in this process, with vast.ai's create call
replaced by a SIGKILL of the process: the run's intent is recorded (LAUNCHING, no instance) and
nothing is rented, as when a laptop dies or ComfyUI is killed at that instant.
"""

from __future__ import annotations

import os
import signal
import sys

from comfy_lora_cloud.providers.vast import VastProvider


async def _killed(self, offer, spec):  # noqa: ANN001 - VastProvider.launch's signature
    print("STEP intent_recorded", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    VastProvider.launch = _killed  # type: ignore[method-assign]
    from comfy_lora_cloud.cli.main import app

    app(["--json", "train", "start", *sys.argv[1:]])
