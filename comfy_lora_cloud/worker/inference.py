"""What the inference image runs (``start.sh`` -> ``python -m comfy_lora_cloud.worker.inference``):
one remote ComfyUI session, supervised.

    base weights (bucket models/ cache, else Hugging Face, then cached into the bucket)
    -> LoRAs from loras/ -> ComfyUI on 127.0.0.1 only -> ready
    -> loop: push new outputs (+ their workflow) to outputs/<session>/, pull new LoRAs,
       heartbeat to sessions/<session>/status.json, stop when idle or at the deadline
    -> stop ComfyUI, push the last outputs, report the end, destroy the instance

Whatever ends it (idle minutes, max hours, ComfyUI dying, a bug, SIGTERM), the last outputs are
pushed, the status says why and the instance is destroyed (vast.ai's per-instance
``CONTAINER_API_KEY``, :mod:`.self_destroy`): a closed laptop never leaves it billing.

LoRAs: every ``loras/*.safetensors`` is pulled at start and again every ``lora_sync_s`` (one
listing; unchanged files are skipped by checksum), or at once when ``<workdir>/.sync-loras``
appears, so a LoRA trained while the session runs shows up without a restart. The pack itself is
installed in the remote ComfyUI, so its LoRA loader node and its ``/lora_cloud/api/loras/<name>/
download`` route fetch one on demand too (``LORA_CLOUD_COMFYUI_LORAS_DIR`` names its
``models/loras``, so the pack downloads into the same folder).

Idle: no prompt queued or running, and no new output, for ``idle_minutes``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .. import jsonsafe
from ..errors import ConfigError, LoraCloudError, redact, register_secret
from ..models import SessionState
from ..storage import sync
from ..storage.base import Storage
from ..storage.layout import LORAS, LORA_SUFFIX, is_image, output_prefix
from ..training import inference
from .weights import HubWeights, WeightSource, check_weights, fetch_weights

# the pack's workflow templates (example_workflows/ beside the package, in the image as in a checkout)
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "example_workflows"


def install_workflows(user_dir: Path, templates: Path = TEMPLATES_DIR) -> list[str]:
    """Put the pack's workflow templates in ComfyUI's workflows folder (``user/default/workflows``),
    so the remote ComfyUI lists them under Workflows as well as in its template browser. A file
    already there (edited during this session) is kept. Returns the names copied."""
    import shutil

    dest = user_dir / "default" / "workflows"
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for template in sorted(templates.glob("*.json")):
        if not (dest / template.name).exists():
            shutil.copyfile(template, dest / template.name)
            copied.append(template.name)
    return copied


log = logging.getLogger("comfy_lora_cloud.worker.inference")

LORA_SUBFOLDER = "lora_cloud"  # ComfyUI lists them as lora_cloud/<name>.safetensors, as on the controller
SYNC_TRIGGER = ".sync-loras"
# what ComfyUI never needs: the instance key, the Hub token (the pack in ComfyUI keeps the bucket's)
_NOT_FOR_COMFY = ("CONTAINER_API_KEY", "HF_TOKEN", "LORA_CLOUD_HF_TOKEN", "VAST_API_KEY", "LORA_CLOUD_VAST_API_KEY")


class Stop(Exception):
    def __init__(self, state: SessionState, message: str):
        super().__init__(message)
        self.state, self.message = state, message


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG (ComfyUI stores ``prompt`` and ``workflow`` there)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return {str(k): str(v) for k, v in (getattr(im, "text", None) or {}).items()}
    except Exception:  # noqa: BLE001 - not a PNG, or a broken one: no metadata
        return {}


def output_name(rel: str) -> str:
    """``sub/dir/ComfyUI_00001_.png`` -> ``sub_dir_ComfyUI_00001_.png``: one file name per output."""
    return rel.replace("\\", "/").strip("/").replace("/", "_").lstrip(".") or "output"


@dataclass
class Supervisor:
    session_id: str
    storage: Storage
    workdir: Path
    command: Sequence[str]  # ComfyUI without the listen/port/output flags
    weights: WeightSource
    destroy: Callable[[], bool]
    port: int = inference.DEFAULT_PORT
    idle_s: float = 20 * 60.0
    max_hours: float = 4.0
    precision: str = "fp8"
    child_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    tick_s: float = 1.0
    lora_sync_s: float = 60.0
    heartbeat_s: float = 20.0
    ready_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        check_limits(self.idle_s / 60, self.max_hours, self.port)  # also for a supervisor built in code
        self.workdir = Path(self.workdir).resolve()
        self.models_dir = self.workdir / "models"
        self.output_dir = self.workdir / "output"
        self.loras_dir = self.models_dir / "loras" / LORA_SUBFOLDER
        self.report = inference.SessionReporter(self.storage, self.session_id, clock=self.clock)
        self.deadline = self.clock() + self.max_hours * 3600
        self.process: subprocess.Popen | None = None
        self.pushed: dict[str, tuple[int, int]] = {}  # rel path -> (size, mtime_ns) uploaded
        self.pending: dict[str, tuple[int, int]] = {}  # seen once; uploaded when unchanged next tick
        self.last_activity = self.clock()
        self.last_prompt: str | None = None
        self._history_seen = False
        self.loras = 0
        self._stop_signal: str | None = None

    # ---- the whole session -------------------------------------------------------------------
    def run(self) -> SessionState:
        """The session, start to end; the instance is destroyed whatever happens."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        try:
            state, message = self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._shutdown(state, message)
        return state

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._stop_signal = "the container was asked to stop (SIGTERM)"

    def _run(self) -> tuple[SessionState, str]:
        try:
            self.report.update(state=SessionState.STARTING, message="getting base weights", deadline=self.deadline,
                               idle_limit_s=self.idle_s)
            self._get_weights()
            self.report.update(message="pulling LoRAs")
            self.sync_loras()
            self.report.update(message="starting ComfyUI", loras=self.loras)
            self._start_comfy()
            self._wait_ready()
            self.last_activity = self.clock()
            self.report.update(state=SessionState.READY, message="ComfyUI is ready", idle_s=0.0)
            self._loop()
        except Stop as stop:
            return stop.state, stop.message
        except LoraCloudError as exc:
            log.error("session failed: %s", exc.message)
            return SessionState.FAILED, exc.message
        except Exception as exc:  # noqa: BLE001 - a bug must still end in a status and a destroy
            log.exception("supervisor crashed")
            return SessionState.FAILED, redact(f"internal error: {type(exc).__name__}: {exc}")
        return SessionState.FAILED, "the supervisor loop ended"  # pragma: no cover

    # ---- start -------------------------------------------------------------------------------
    def _get_weights(self) -> None:
        files = inference.model_files(self.precision)
        check_weights(self.storage, self.weights, files.values())  # gated / no token: fail before anything slow
        for role, pair in files.items():
            folder = self.models_dir / inference.comfy_folder(role)
            fetch_weights(self.storage, self.weights, folder, files=[pair])
            for alias in inference.ALIASES.get(role, ()):
                link = folder / alias
                if alias != pair[0] and not link.exists():
                    link.symlink_to(pair[0])  # relative: the file beside it
            self._check_time()

    def _model_paths(self) -> Path:
        """An extra_model_paths.yaml so ComfyUI finds the weights and LoRAs on the instance's disk."""
        path = self.workdir / "extra_model_paths.yaml"
        lines = ["lora_cloud:", f"    base_path: {json.dumps(str(self.models_dir))}"]
        lines += [f"    {name}: {name}" for name in ("diffusion_models", "text_encoders", "vae", "loras")]
        path.write_text("\n".join(lines) + "\n", "utf-8")
        return path

    def _start_comfy(self) -> None:
        folders = {name: self.workdir / name for name in ("user", "input", "temp")}
        for folder in (self.output_dir, *folders.values()):
            folder.mkdir(parents=True, exist_ok=True)
        install_workflows(folders["user"])
        # every folder ComfyUI writes is on the instance's disk: the image's own files stay read-only
        cmd = [*self.command, "--listen", "127.0.0.1", "--port", str(self.port), "--output-directory",
               str(self.output_dir), "--user-directory", str(folders["user"]), "--input-directory",
               str(folders["input"]), "--temp-directory", str(folders["temp"]),
               "--database-url", f"sqlite:///{folders['user'] / 'comfyui.db'}",
               "--extra-model-paths-config", str(self._model_paths()), "--disable-auto-launch"]
        env = {k: v for k, v in self.child_env.items() if k not in _NOT_FOR_COMFY}
        env.update({"LORA_CLOUD_COMFYUI_LORAS_DIR": str(self.loras_dir.parent), "LORA_CLOUD_REMOTE": "1",
                    "LORA_CLOUD_HOME": str(self.workdir / "lora-cloud-home")})
        log_path = self.workdir / "logs" / "comfyui.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting ComfyUI: %s", " ".join(shlex.quote(c) for c in cmd))
        with open(log_path, "ab") as out:
            # in the supervisor's process group: whatever ends the container ends ComfyUI with it
            self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def _get(self, path: str, timeout: float = 5.0) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
            return jsonsafe.loads(resp.read(jsonsafe.MAX_BYTES + 1) or b"null")  # too long: refused, not read on

    def _wait_ready(self) -> None:
        end = self.clock() + self.ready_timeout_s
        while True:
            self._check_process()
            self._check_time()
            try:
                self._get("/system_stats")
                return
            except (OSError, ValueError):
                pass
            if self.clock() > end:
                raise Stop(SessionState.FAILED, f"ComfyUI did not answer within {self.ready_timeout_s:g} s")
            self.sleep(min(self.tick_s, 1.0))

    # ---- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        next_sync = self.clock() + self.lora_sync_s
        next_beat = self.clock() + self.heartbeat_s
        while True:
            self._check_process()
            self._check_time()
            self._watch_activity()
            if self.push_outputs():
                self.last_activity = self.clock()
            now = self.clock()
            trigger = self.workdir / SYNC_TRIGGER
            if now >= next_sync or trigger.exists():
                with contextlib.suppress(FileNotFoundError):
                    trigger.unlink()
                try:
                    self.sync_loras()
                except LoraCloudError as exc:
                    log.warning("LoRA sync failed (next try in %g s): %s", self.lora_sync_s, exc.message)
                next_sync = now + self.lora_sync_s
            idle = now - self.last_activity
            if idle >= self.idle_s:
                raise Stop(SessionState.IDLE, f"idle for {idle / 60:.1f} min (limit {self.idle_s / 60:g} min)")
            if now >= next_beat:
                self._heartbeat(idle)
                next_beat = now + self.heartbeat_s
            self.sleep(self.tick_s)

    def _heartbeat(self, idle: float) -> None:
        try:
            self.report.update(state=SessionState.READY, message="ComfyUI is ready", idle_s=round(idle, 1),
                               outputs=len(self.pushed), loras=self.loras)
        except LoraCloudError as exc:  # the bucket hiccupped: the next beat tries again
            log.warning("could not write the heartbeat: %s", exc.message)

    def _check_process(self) -> None:
        if self._stop_signal:
            raise Stop(SessionState.STOPPED, self._stop_signal)
        if self.process is not None and self.process.poll() is not None:
            raise Stop(SessionState.FAILED, f"ComfyUI exited with code {self.process.returncode} "
                                            "(see logs/comfyui.log on the instance)")

    def _check_time(self) -> None:
        if self._stop_signal:
            raise Stop(SessionState.STOPPED, self._stop_signal)
        if self.clock() >= self.deadline:
            raise Stop(SessionState.TIMED_OUT, f"reached its {self.max_hours:g} h limit")

    def _watch_activity(self) -> None:
        """A prompt queued or running, or a new one in the history, is activity."""
        try:
            queue = self._get("/queue")
            history = self._get("/history?max_items=1")
        except (OSError, ValueError):
            return  # ComfyUI busy or restarting: the process check decides
        if isinstance(queue, dict) and (queue.get("queue_running") or queue.get("queue_pending")):
            self.last_activity = self.clock()
        if isinstance(history, dict):
            latest = next(iter(history), None)
            if self._history_seen and latest != self.last_prompt:
                self.last_activity = self.clock()
            self._history_seen, self.last_prompt = True, latest

    # ---- outputs and LoRAs ---------------------------------------------------------------------
    def push_outputs(self) -> int:
        """Upload every image that is new or changed and has stopped growing (seen the same on two
        ticks); each goes with a ``.json`` of its workflow (the PNG's prompt/workflow text).
        Returns how many were pushed."""
        if not self.output_dir.is_dir():
            return 0
        pushed = 0
        for path in sorted(self.output_dir.rglob("*")):
            if not path.is_file() or not is_image(path.name) or path.name.startswith("."):
                continue
            rel = path.relative_to(self.output_dir).as_posix()
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            if self.pushed.get(rel) == sig:
                continue
            if self.pending.get(rel) != sig:
                self.pending[rel] = sig  # still being written, maybe: next tick
                continue
            name = output_name(rel)
            key = output_prefix(self.session_id) + name
            try:
                data = path.read_bytes()
                meta = {"session": self.session_id, "file": rel, "size": len(data)}
                for k, v in png_text(data).items():
                    try:  # a workflow in the PNG's text: whatever a custom node put there
                        meta[k] = jsonsafe.loads(v)
                    except ValueError:
                        meta[k] = v
                self.storage.write_bytes(key, data, content_type=_content_type(name))
                self.storage.write_bytes(key + ".json", json.dumps(meta).encode(), content_type="application/json")
            except (LoraCloudError, OSError) as exc:
                log.warning("could not push %s (next tick tries again): %s", rel, getattr(exc, "message", exc))
                continue
            self.pushed[rel] = sig
            self.pending.pop(rel, None)
            pushed += 1
        return pushed

    def sync_loras(self) -> int:
        """Pull every ``loras/<name>.safetensors`` that is missing or different (by checksum)."""
        plan = sync.plan_pull(self.storage, LORAS, self.loras_dir)
        plan.transfers = [t for t in plan.transfers if "/" not in t.rel and t.rel.endswith(LORA_SUFFIX)]
        if plan.transfers:
            sync.apply(plan, self.storage, workers=4)
            log.info("pulled %d LoRA(s)", len(plan.transfers))
        self.loras = len([p for p in self.loras_dir.glob(f"*{LORA_SUFFIX}")]) if self.loras_dir.is_dir() else 0
        return len(plan.transfers)

    # ---- the end -------------------------------------------------------------------------------
    def _stop_comfy(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(timeout=15)

    def _shutdown(self, state: SessionState, message: str) -> None:
        log.info("session %s ends: %s (%s)", self.session_id, state.value, message)
        self._stop_comfy()
        with contextlib.suppress(Exception):
            self._final_push()  # the last images: there is no next tick to wait for
        try:
            self.report.update(state=state, message=message, outputs=len(self.pushed),
                               error=None if state in (SessionState.IDLE, SessionState.STOPPED) else message)
        except LoraCloudError as exc:
            log.error("could not write the final status: %s", exc.message)
        try:
            self.destroy()
        except LoraCloudError as exc:
            log.error("%s (the controller's guard destroys it)", exc.message)

    def _final_push(self) -> None:
        """Push what is left, without waiting for a second look (ComfyUI is stopped)."""
        if not self.output_dir.is_dir():
            return
        for path in self.output_dir.rglob("*"):
            if path.is_file() and is_image(path.name):
                st = path.stat()
                self.pending[path.relative_to(self.output_dir).as_posix()] = (st.st_size, st.st_mtime_ns)
        self.push_outputs()


def _content_type(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower()
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
        suffix, "application/octet-stream")


def check_limits(idle_min: float, max_hours: float, port: int) -> None:
    """A clear :class:`~..errors.ConfigError` for a limit that is no limit (``inf``, ``nan``, 0 or
    less, past the longest session) or a port ComfyUI cannot be reached on (0 picks any port, which
    the tunnel would miss; past 65535 is none)."""
    from ..settings import MAX_SESSION_HOURS

    for name, value, high in ((inference.ENV_IDLE, idle_min, MAX_SESSION_HOURS * 60),
                              (inference.ENV_MAX_HOURS, max_hours, MAX_SESSION_HOURS)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 < value <= high:
            raise ConfigError(f"{name} is {value!r}: it must be a number above 0 and at most {high:g}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{inference.ENV_PORT} is {port!r}: it must be a port from 1 to 65535")


def session_limits(env: Mapping[str, str]) -> tuple[float, float, int]:
    """``(idle minutes, max hours, ComfyUI's port)`` from the environment the controller set,
    parsed and range-checked (:func:`check_limits`)."""
    values: list[float | int] = []
    for name, default, kind in ((inference.ENV_IDLE, "20", float), (inference.ENV_MAX_HOURS, "4", float),
                                (inference.ENV_PORT, str(inference.DEFAULT_PORT), int)):
        raw = env.get(name, default).strip()
        try:
            values.append(kind(raw))
        except ValueError:
            raise ConfigError(f"{name} is {raw[:40]!r}, not a {'whole ' if kind is int else ''}number") from None
    idle_min, max_hours, port = values
    check_limits(idle_min, max_hours, int(port))
    return float(idle_min), float(max_hours), int(port)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: Sequence[str] | None = None) -> int:
    """Environment (set by the controller, ``service/sessions/launch.py``): ``LORA_CLOUD_STORAGE``,
    ``LORA_CLOUD_SESSION_ID``, ``LORA_CLOUD_IDLE_MINUTES``, ``LORA_CLOUD_MAX_HOURS``,
    ``LORA_CLOUD_FLUX_PRECISION`` (fp8 | fp16), ``LORA_CLOUD_COMFY_PORT``; optional ``HF_TOKEN``
    (only while the bucket lacks the weights), ``LORA_CLOUD_WORKDIR`` (default /workspace),
    ``LORA_CLOUD_COMFY_COMMAND`` (default ``python /opt/ComfyUI/main.py``), and vast.ai's
    ``CONTAINER_ID``/``CONTAINER_API_KEY`` with ``LORA_CLOUD_VAST_URL``.
    Exit status: 0 ended as asked (idle, deadline, stopped), 1 failed, 2 bad configuration."""
    ap = argparse.ArgumentParser(prog="lora-cloud-inference", description="Run one remote ComfyUI session.")
    ap.add_argument("--workdir", default=os.environ.get("LORA_CLOUD_WORKDIR", "/workspace"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..settings import Settings, install_log_redaction
    from ..storage import open_storage
    from .self_destroy import SelfDestroy

    install_log_redaction()
    destroy = SelfDestroy.from_env()
    env = os.environ
    try:
        session_id = env.get(inference.ENV_SESSION) or ""
        from ..models import validate_name

        validate_name(session_id, "session id")
        settings = Settings.load()
        url = env.get(inference.ENV_STORAGE)
        if not url:
            raise LoraCloudError(f"set {inference.ENV_STORAGE} to the bucket (gs://...) the session uses")
        storage = open_storage(url, settings=settings)
        idle_min, max_hours, port = session_limits(env)
        precision = env.get(inference.ENV_PRECISION, "fp8")
        inference.model_files(precision)
    except (LoraCloudError, ValueError) as exc:
        log.error("cannot start: %s", getattr(exc, "message", exc))
        with contextlib.suppress(LoraCloudError):
            destroy()
        return 2
    token = settings.secret("hf_token")
    register_secret(token)
    command = shlex.split(env.get("LORA_CLOUD_COMFY_COMMAND") or f"{shlex.quote(sys.executable)} /opt/ComfyUI/main.py")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(session_id=session_id, storage=storage, workdir=Path(args.workdir), command=command,
                            weights=HubWeights(token), destroy=destroy, port=port, idle_s=idle_min * 60,
                            max_hours=max_hours, precision=precision)
    state = supervisor.run()
    return 0 if state in (SessionState.IDLE, SessionState.TIMED_OUT, SessionState.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
