"""What the trainer image runs: one whole training run (:class:`~.trainer.Trainer`), reported
through the bucket, with the instance destroyed at the end (:mod:`.self_destroy`) unless the
platform preempted it.

Run as ``python -m comfy_lora_cloud.worker.entrypoint`` (see :func:`main` for the environment).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..errors import LoraCloudError, register_secret
from ..models import RunState
from ..training.spec import load_spec
from .trainer import Trainer
from .weights import HubWeights

log = logging.getLogger("comfy_lora_cloud.worker.entrypoint")  # also when run as __main__


# ---- command line (what the image runs) ----------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Environment: ``LORA_CLOUD_STORAGE`` (gs://bucket or a folder), ``LORA_CLOUD_RUN_ID`` or
    ``LORA_CLOUD_RUN_SPEC``; optional ``HF_TOKEN``, ``LORA_CLOUD_WORKDIR`` (default /workspace),
    ``LORA_CLOUD_KOHYA_LAUNCHER`` (replaces ``accelerate launch flux_train_network.py``),
    ``KOHYA_DIR``, ``LORA_CLOUD_TOKENIZER_DIR``, and vast.ai's ``CONTAINER_ID``/``CONTAINER_API_KEY``
    with ``LORA_CLOUD_VAST_URL``.
    Exit status: 0 done, 1 failed or timed out, 2 bad configuration (nothing started), 143
    preempted (SIGTERM; the instance is left for the controller's recovery)."""
    ap = argparse.ArgumentParser(prog="lora-cloud-trainer", description="Run one LoRA training run.")
    ap.add_argument("--workdir", default=os.environ.get("LORA_CLOUD_WORKDIR", "/workspace"))
    ap.add_argument("--storage", default=os.environ.get("LORA_CLOUD_STORAGE"))
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--self-test", action="store_true",
                    help="check this image instead of training (worker/selftest.py); --storage: the bucket to use")
    args = ap.parse_args(argv)
    if args.self_test:
        from .selftest import run_self_test

        return run_self_test(args.storage, args.workdir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..settings import Settings, install_log_redaction
    from ..storage import open_storage
    from .self_destroy import SelfDestroy

    install_log_redaction()
    destroy = SelfDestroy.from_env()
    try:
        settings = Settings.load()
        if not args.storage:
            raise LoraCloudError("set LORA_CLOUD_STORAGE to the bucket (gs://...) the run lives in")
        storage = open_storage(args.storage, settings=settings)
        spec = load_spec(storage, run_id=args.run_id)
    except LoraCloudError as exc:
        log.error("cannot start: %s", exc.message)
        _safe_destroy(destroy)
        return 2
    token = settings.secret("hf_token")
    register_secret(token)
    launcher = shlex.split(os.environ["LORA_CLOUD_KOHYA_LAUNCHER"]) if os.environ.get("LORA_CLOUD_KOHYA_LAUNCHER") \
        else None
    trainer = Trainer(spec=spec, storage=storage, workdir=Path(args.workdir), weights=HubWeights(token),
                      destroy=destroy, launcher=launcher, kohya_dir=os.environ.get("KOHYA_DIR", "/opt/sd-scripts"),
                      tokenizer_dir=os.environ.get("LORA_CLOUD_TOKENIZER_DIR", "/opt/tokenizers"),
                      instance_id=destroy.instance_id)
    signal.signal(signal.SIGTERM, trainer.on_sigterm)
    state = trainer.run()
    log.info("run %s finished: %s", spec.run_id, state.value)
    if state is RunState.PREEMPTED:
        return 128 + signal.SIGTERM
    return 0 if state == RunState.DONE else 1


def _safe_destroy(destroy: Callable[[], bool]) -> None:
    try:
        destroy()
    except LoraCloudError as exc:
        log.error("%s", exc.message)


if __name__ == "__main__":
    sys.exit(main())
