"""A controller process for the recovery crash tests: one guard pass, as ComfyUI's loop or cron
runs it, that SIGKILLs itself after a chosen step of a preempted run's move.

    python -m tests.service.recovery_controller STEP

STEP: one of ``service.recovery.STEPS`` (destroyed, intent_recorded, created, recorded). The
settings (home, bucket, vast.ai URL and key) come from the environment the test set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from comfy_lora_cloud.service.app import App


def main(crash_at: str) -> None:
    app = App.open()

    def on_step(name: str) -> None:
        print(f"STEP {name}", flush=True)
        if name == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    report = asyncio.run(app.guard_pass(grace_s=0, on_recovery_step=on_step))
    print(json.dumps(report.to_dict()["recovery"]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
