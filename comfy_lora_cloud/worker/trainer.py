"""One whole training run on the rented GPU, reported through the bucket: :class:`Trainer`.

    spec -> (already finished? destroy and stop) -> check weights access -> pull + check dataset
    -> weights -> configs -> resume from the bucket's checkpoint if any -> kohya (subprocess)
    -> follow progress, upload checkpoints, samples, logs -> upload the LoRA, verify checksums
    -> done -> destroy the instance

Whatever happens (kohya fails, exits 0 without a LoRA, the deadline passes, a bug), the logs
are uploaded, the status says why, and the instance is destroyed: an instance left billing is
the one thing users cannot forgive. The run's deadline counts from the first start, recorded in
``events.jsonl``, so a resumed run on a new instance does not get a fresh allowance.

One exception: SIGTERM (the platform stopping the container: an outbid interruptible instance, a
``docker stop``) is a preemption, not an end. kohya is killed (it saves nothing on a signal), the
newest whole checkpoint not yet in the bucket is uploaded, the status says ``preempted`` with the
logs, and the instance is left to the controller's recovery (``service/runs/recovery.py``), which
resumes it in place or moves the run; all of that within the platform's grace period, since it is
no more than the last checkpoint's upload and two small writes.

The steps have their own modules: the dataset pull (:mod:`.dataset_pull`), base weights
(:mod:`.weights`), checkpoints (:mod:`.checkpoints`), the kohya child process
(:mod:`.kohya_process`), publishing the LoRA (:mod:`.publish`) and the instance's self-destroy
(:mod:`.self_destroy`, wired by :mod:`.entrypoint`). This module runs them in order and turns
whatever happens into a status.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import ChecksumMismatch, LoraCloudError, ObjectNotFound, StorageError, TrainingError, redact
from ..models import RunState
from ..settings import RedactingFilter
from ..storage.base import Storage
from ..training.kohya_config import TrainJob, TrainPaths, write_configs
from ..training.presets import load_preset, plan_steps
from ..training.progress import Event, ProgressParser
from ..training.spec import RunSpec
from ..training.status import StatusReporter
from .checkpoints import complete_states, download_checkpoint, read_latest, upload_checkpoint
from .dataset_pull import check_local_dataset, pull_dataset
from .kohya_process import kill_tree, kohya_env, pump_output
from .publish import LoraPublisher, lora_info
from .weights import WeightSource, check_weights, fetch_weights

log = logging.getLogger(__name__)



class DeadlineReached(TrainingError):
    """The run used up its max hours."""


class Preempted(BaseException):
    """SIGTERM: the platform is stopping this instance. A BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` on the way turns it into a failure."""


@dataclass
class Trainer:
    spec: RunSpec
    storage: Storage
    workdir: Path
    weights: WeightSource
    destroy: Callable[[], bool]
    launcher: Sequence[str] | None = None  # None: accelerate launch flux_train_network.py
    kohya_dir: str = "/opt/sd-scripts"
    tokenizer_dir: str | None = "/opt/tokenizers"
    clock: Callable[[], float] = time.time
    poll_interval: float = 0.5
    child_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    instance_id: str | None = None  # the provider's id of this instance (vast.ai's CONTAINER_ID)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.paths = TrainPaths(root=str(self.workdir), kohya_dir=self.kohya_dir, tokenizer_dir=self.tokenizer_dir)
        self.report = StatusReporter(self.storage, self.spec.run_id, min_interval=self.spec.status_interval,
                                     log_interval=self.spec.log_interval, clock=self.clock)
        self.log_path = self.workdir / "logs" / "trainer.log"
        self.step_offset = 0
        self.steps_per_epoch = 0
        self.grad_accum = 1
        self.resumed_epoch = 0  # kohya restarts its step counter after a resume; we add the epochs done
        self.uploaded_epochs: set[int] = set()
        self.uploaded_samples: set[str] = set()
        self.error_hint: str | None = None
        self.stop_requested = False  # SIGTERM arrived
        self._phase = "init"  # init | setup | kohya | publish

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> RunState:
        """The whole run; the instance is destroyed whatever happens in it, unless it was
        preempted (then the controller's recovery decides: it may resume right here)."""
        state = RunState.FAILED
        try:
            state = self._run()
            return state
        finally:
            if state is not RunState.PREEMPTED:
                self._destroy()

    def on_sigterm(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        """The SIGTERM handler (installed by :func:`main`). While base weights or the dataset are
        being fetched there is nothing to save: stop at once. While kohya runs, its loop stops it
        and saves what it can. While the LoRA is being published, finish that (it is the point)."""
        self.stop_requested = True
        log.warning("SIGTERM: the instance is being stopped (preempted)")
        if self._phase == "setup":
            raise Preempted()

    def _run(self) -> RunState:
        try:
            previous = self.report.resume_from_bucket()
        except LoraCloudError as exc:  # cannot even read the bucket: nothing to report to
            log.error("cannot read the status of run %s: %s", self.spec.run_id, exc.message)
            return RunState.FAILED
        if previous is not None and previous.state.is_terminal:
            log.info("run %s is already %s; nothing to do", self.spec.run_id, previous.state.value)
            return previous.state
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.deadline = self._first_start() + self.spec.max_hours * 3600
        handler = logging.FileHandler(self.log_path, encoding="utf-8")  # our own lines go in the uploaded log too
        handler.setFormatter(logging.Formatter("[trainer] %(asctime)s %(levelname)s %(message)s"))
        handler.addFilter(RedactingFilter())
        logging.getLogger("comfy_lora_cloud").addHandler(handler)
        try:
            return self._run_logged()
        finally:
            logging.getLogger("comfy_lora_cloud").removeHandler(handler)
            handler.close()

    def _run_logged(self) -> RunState:
        try:
            self._phase = "setup"
            self._check_deadline()
            self.report.event("started", instance=self.instance_id)
            self.report.update(state=RunState.STARTING, message="checking base weights", error=None)
            check_weights(self.storage, self.weights)
            self.report.update(message="pulling the dataset")
            images = self._pull_dataset()
            self.report.update(message="getting base weights")
            fetch_weights(self.storage, self.weights, Path(self.paths.models_dir), cache=self.spec.cache_weights)
            self._check_deadline()
            return self._train(images)
        except Preempted:
            return self._preempted()
        except DeadlineReached as exc:
            return self._finish(RunState.TIMED_OUT, str(exc))
        except LoraCloudError as exc:
            return self._finish(RunState.FAILED, exc.message)
        except Exception as exc:  # a bug must still end in a status (and, in run(), a destroyed instance)
            log.exception("trainer crashed")
            return self._finish(RunState.FAILED, redact(f"internal error: {type(exc).__name__}: {exc}"))

    def _first_start(self) -> float:
        starts = [e["t"] for e in self.report.events if e.get("kind") == "state" and e.get("state") == "starting"]
        return min(starts) if starts else self.clock()

    def _check_deadline(self) -> None:
        if self.stop_requested:
            raise Preempted()
        if self.clock() >= self.deadline:
            raise DeadlineReached(f"the run reached its limit of {self.spec.max_hours:g} h")

    def _finish(self, state: RunState, error: str | None) -> RunState:
        self._phase = "finish"  # a SIGTERM from here on only sets the flag: this status must land
        fields = {"state": state, "error": error, "message": error or state.value, "eta_seconds": None}
        self.report.update(**fields)
        try:
            self.report.upload_log(self.log_path, force=True)
            self.report.flush()
        except (LoraCloudError, OSError) as exc:
            log.error("could not write the final status of run %s: %s", self.spec.run_id, exc)
        return state

    def _preempted(self) -> RunState:
        """Report the preemption: where the run was, and the checkpoint it will resume from."""
        self._phase = "finish"
        status = self.report.status
        try:
            latest = read_latest(self.storage, self.spec.run_id)
        except LoraCloudError:
            latest = None
        self.report.event("preempted", instance=self.instance_id, step=status.step,
                          checkpoint=latest.name if latest else None, checkpoint_step=latest.step if latest else 0,
                          by="trainer")
        message = f"preempted (the instance was stopped); resumes from checkpoint {latest.name if latest else 'none'}"
        self.report.update(state=RunState.PREEMPTED, message=message, eta_seconds=None)
        try:
            self.report.upload_log(self.log_path, force=True)
            self.report.flush()
        except (LoraCloudError, OSError) as exc:
            log.error("could not write the preempted status of run %s: %s", self.spec.run_id, exc)
        return RunState.PREEMPTED

    def _destroy(self) -> None:
        try:
            self.destroy()
        except LoraCloudError as exc:
            log.error("%s", exc.message)

    # ---- dataset -------------------------------------------------------------------------------
    def _pull_dataset(self) -> int:
        image_dir = Path(self.paths.image_dir)
        pull_dataset(self.storage, self.spec.dataset, image_dir)
        images = check_local_dataset(image_dir)
        self.report.event("dataset", images=len(images))
        return len(images)

    # ---- training ------------------------------------------------------------------------------
    def _train(self, images: int) -> RunState:
        preset = load_preset(self.spec.lora_type, self.spec.vram_gb, self.spec.overrides)
        plan = plan_steps(preset, images)
        self.steps_per_epoch = plan.steps_per_epoch
        self.grad_accum = int(preset.training.get("gradient_accumulation_steps", 1))
        job = TrainJob(preset=preset, plan=plan, output_name=self.spec.lora_name, trigger=self.spec.trigger,
                       run_id=self.spec.run_id, paths=self.paths, sample_prompts=self.spec.sample_prompts)
        files = write_configs(job, self.paths.config_dir, launcher=self.launcher)
        cmd = files.command
        output_dir = Path(self.paths.output_dir)
        cp = read_latest(self.storage, self.spec.run_id)
        if cp is not None:
            try:
                state_dir = download_checkpoint(self.storage, self.spec.run_id, cp, output_dir)
            except (ChecksumMismatch, ObjectNotFound) as exc:  # a torn checkpoint: start over, do not fail
                self.report.event("resume_skipped", reason=exc.message)
            else:
                cmd = [*cmd, "--resume", str(state_dir), "--initial_epoch", str(cp.epoch + 1)]
                self.resumed_epoch = cp.epoch
                self.step_offset = cp.epoch * plan.steps_per_epoch
                self.uploaded_epochs.add(cp.epoch)
                self.report.event("resumed", checkpoint=cp.name, epoch=cp.epoch, step=self.step_offset,
                                  instance=self.instance_id)
        self.report.update(state=RunState.TRAINING, message="training", total_steps=plan.total_steps,
                           total_epochs=plan.epochs, step=self.step_offset,
                           epoch=cp.epoch if cp is not None and self.step_offset else 0)
        self._check_deadline()
        self._phase = "kohya"
        rc = self._run_kohya(cmd, output_dir)
        lora = output_dir / f"{self.spec.lora_name}.safetensors"
        if rc != 0 and self.stop_requested:  # the container's stop took kohya down with it
            self._upload_new_checkpoints(output_dir)
            raise Preempted()
        self._phase = "publish"
        if rc != 0:
            raise TrainingError(f"kohya failed (exit {rc}): {self.error_hint or 'see logs/trainer.log'}")
        if not lora.is_file():
            raise TrainingError("kohya exited 0 without writing the LoRA"
                                + (f": {self.error_hint}" if self.error_hint else " (see logs/trainer.log)"))
        self._upload_new_checkpoints(output_dir, attempts=3)
        self._upload_new_samples(output_dir)
        info = lora_info(self.spec, preset, plan, images, self.report, self.clock())
        return LoraPublisher(self.storage, self.spec, self.report, self.log_path).publish(lora, info, plan.total_steps)

    def _run_kohya(self, cmd: list[str], output_dir: Path) -> int:
        env = kohya_env(self.child_env)
        with open(self.log_path, "a", encoding="utf-8") as logf:
            logf.write(f"$ {shlex.join(cmd)}\n")
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=self.workdir)
        except OSError as exc:
            raise TrainingError(f"cannot start kohya ({cmd[0]}): {exc.strerror or exc}") from None
        (self.workdir / "kohya.pid").write_text(str(proc.pid))
        chunks: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=pump_output, args=(proc.stdout, chunks), daemon=True).start()
        parser = ProgressParser()
        done = False
        try:
            with open(self.log_path, "a", encoding="utf-8") as logf:
                while not done:
                    done = self._drain(chunks, parser, logf)
                    self._upload_new_checkpoints(output_dir)
                    self._upload_new_samples(output_dir)
                    self.report.maybe_write()
                    self.report.upload_log(self.log_path)
                    if not done and self.stop_requested:  # preempted: save what can be saved
                        kill_tree(proc)
                        proc.wait()
                        self._drain(chunks, parser, logf)
                        self._upload_new_checkpoints(output_dir)
                        raise Preempted()
                    if not done and self.clock() >= self.deadline:
                        kill_tree(proc)
                        proc.wait()
                        self._drain(chunks, parser, logf)
                        self._upload_new_checkpoints(output_dir)
                        raise DeadlineReached(f"the run reached its limit of {self.spec.max_hours:g} h; "
                                              f"last checkpoint: {self.report.status.last_checkpoint or 'none'}")
                for event in parser.close():
                    self._on_event(event)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
            proc.wait()
        return proc.returncode

    def _drain(self, chunks: "queue.Queue[str | None]", parser: ProgressParser, logf) -> bool:
        """Handle what kohya printed; True once its output has ended."""
        try:
            first = chunks.get(timeout=self.poll_interval)
        except queue.Empty:
            return False
        items = [first]
        while True:
            try:
                items.append(chunks.get_nowait())
            except queue.Empty:
                break
        ended = None in items
        text = "".join(i for i in items if i is not None)
        if text:
            logf.write(text)
            logf.flush()
            for event in parser.feed(text):
                self._on_event(event)
        return ended

    def _on_event(self, ev: Event) -> None:
        d, status = ev.data, self.report.status
        if ev.kind == "step":
            step = self.step_offset + d["step"]
            remaining = max(status.total_steps - step, 0)
            eta = remaining * d["sec_per_step"] if d["sec_per_step"] else None
            self.report.update(step=step, loss=d["loss"], sec_per_step=d["sec_per_step"], eta_seconds=eta)
        elif ev.kind == "plan":
            if "batches_per_epoch" in d:  # kohya's count (buckets make it differ from our plan)
                self.steps_per_epoch = -(-d["batches_per_epoch"] // self.grad_accum)
                self.step_offset = self.resumed_epoch * self.steps_per_epoch
            if "total_steps" in d:
                self.report.update(total_steps=d["total_steps"])
        elif ev.kind == "epoch":
            self.report.event("epoch", epoch=d["epoch"], total=d["total"])
            self.report.update(epoch=d["epoch"], total_epochs=d["total"])
        elif ev.kind == "error":
            self.error_hint = d["message"]
            self.report.event("error", message=redact(d["message"]))
        elif ev.kind == "sample":  # kohya started rendering; "sample" events name uploaded files
            self.report.event("sampling", **d)
        elif ev.kind in ("state_saved", "model_saved"):
            self.report.event(ev.kind, **d)

    def _upload_new_checkpoints(self, output_dir: Path, attempts: int = 1) -> None:
        """Upload the newest complete checkpoint not in the bucket yet. While kohya runs, one try
        per poll (a flaky bucket must not kill a paid run: the next poll tries again); after it,
        ``attempts`` tries, since there is no next poll."""
        states = [(e, p) for e, p in complete_states(output_dir) if e not in self.uploaded_epochs]
        if not states:
            return
        epoch, path = states[-1]  # only the newest matters for resume
        try:
            state = json.loads((path / "train_state.json").read_text())
        except (OSError, ValueError):
            return  # still being written; next poll
        step = epoch * self.steps_per_epoch
        for attempt in range(1, attempts + 1):
            try:
                cp = upload_checkpoint(self.storage, self.spec.run_id, path, epoch, step)
                break
            except StorageError as exc:
                log.warning("checkpoint %s not uploaded yet (try %d/%d): %s", path.name, attempt, attempts,
                            exc.message)
        else:
            return
        self.uploaded_epochs.update(e for e, _ in states)
        self.report.event("checkpoint", name=cp.name, epoch=epoch, step=step, kohya_state=state)
        self.report.update(last_checkpoint=cp.name, force=True)

    def _upload_new_samples(self, output_dir: Path) -> None:
        sample_dir = output_dir / "sample"
        if not sample_dir.is_dir():
            return
        new = [p for p in sorted(sample_dir.glob("*.png")) if p.name not in self.uploaded_samples]
        self.uploaded_samples.update(self.report.upload_samples(new))
