#!/usr/bin/env bash
# The inference image's start script. vast.ai runs it as the instance's on-start command (runtype
# "ssh": vast.ai's own sshd stays up, and the controller reaches ComfyUI through an SSH tunnel);
# with runtype "args" it is the image's ENTRYPOINT. Everything it starts is plain Python,
# comfy_lora_cloud/worker/inference.py (tested as such): weights, LoRAs, ComfyUI on 127.0.0.1
# only, outputs to the bucket, idle stop and deadline, self-destroy.
#
# Environment: the controller's (service/sessions/control.py; worker/inference.py main() lists it), plus
#   LORA_CLOUD_PYTHON   the interpreter (default: python, the image's venv)
#   LORA_CLOUD_WORKDIR  where weights, outputs and logs go (default: the current folder;
#                       /workspace in the image)
#   LORA_CLOUD_USER     the non-root user to run as when started as root (default: comfy, if it exists)
#
#   start.sh --self-test [ARGS]   checks the built image instead (worker/inference_selftest.py)
set -euo pipefail

PY="${LORA_CLOUD_PYTHON:-python}"
if [ "${1:-}" = "--self-test" ]; then
  shift
  exec "$PY" -m comfy_lora_cloud.worker.inference_selftest "$@"
fi
WORKDIR="${LORA_CLOUD_WORKDIR:-$PWD}"
RUN_AS="${LORA_CLOUD_USER:-comfy}"
mkdir -p "$WORKDIR"
cd "$WORKDIR"

# Never as root: vast.ai's ssh runtype starts on-start commands as root, so drop to the image's user.
if [ "$(id -u)" = 0 ] && id "$RUN_AS" >/dev/null 2>&1; then
  chown -R "$RUN_AS:$RUN_AS" "$WORKDIR"
  exec runuser -p -u "$RUN_AS" -- env HOME="$(getent passwd "$RUN_AS" | cut -d: -f6)" \
    "$PY" -m comfy_lora_cloud.worker.inference --workdir "$WORKDIR"
fi
exec "$PY" -m comfy_lora_cloud.worker.inference --workdir "$WORKDIR"
