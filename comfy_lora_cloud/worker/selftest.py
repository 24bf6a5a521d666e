"""The trainer image's self-test: ``python /opt/trainer/train_lora.py --self-test [--storage URL]``.

The one home of "does this image work": tests/images/ runs it inside a built image (so does
``scripts/build-images.sh``), and it can be run on a rented instance too. Three checks, one line
each; exit 0 only when all pass:

1. **imports**: every module of this package the trainer loads, the image's scripts, torch, the
   libraries kohya needs (accelerate, diffusers, transformers, bitsandbytes for AdamW8bit, cv2, ...)
   and sd-scripts' own ``flux_train_network``, ``library`` and ``networks.lora_flux``.
2. **kohya's parser**: for each preset at each VRAM tier, the configs :func:`write_configs`
   generates go through sd-scripts' ``setup_parser()`` and ``read_config_from_file()`` (the merge
   kohya does); every key must be one of the parser's options (kohya silently keeps unknown ones);
   then ``verify_training_args``/``prepare_dataset_args``, the dataset TOML through config_util's
   sanitizer and blueprint, the dataset group built from a few generated images, Flux's
   ``assert_extra_args`` and the sample prompts through ``load_prompts``; the launch command's
   program and script must exist.
3. **end to end**: under a fresh prefix of the bucket given (``--storage``; default a temporary
   folder) it writes a 3-image dataset, stand-in weights and a run spec, runs the entrypoint as a
   subprocess with the stand-in kohya (``LORA_CLOUD_SELFTEST_KOHYA``, the tests' fake_kohya.py)
   and checks that the run is done and that the LoRA in the bucket is the file kohya wrote; then
   removes the prefix. The child gets no ``CONTAINER_ID``/``CONTAINER_API_KEY``/``HF_TOKEN``: a
   self-test on a rented instance never destroys it and never reaches the Hub.

Without torchvision (the local CPU build: no torchvision wheel runs beside the CPU torch) kohya's
import gets a stand-in for ``torchvision.transforms`` (only training-time image transforms use
it) and the imports line says so; where torchvision is installed it must import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import LoraCloudError
from ..models import RunState
from ..storage import open_storage
from ..storage.base import Storage, checksum_file
from ..storage.layout import dataset_prefix, lora_key, model_key, run_key
from ..training.kohya_config import MODEL_FILES, TrainJob, TrainPaths, kohya_command, write_configs
from ..training.presets import PRESET_TYPES, TIERS, load_preset, plan_steps
from ..training.spec import RunSpec

DEFAULT_STANDIN = "/opt/trainer/selftest/standin_kohya.py"
DEFAULT_SCRIPTS = "/opt/trainer"
# the packages the trainer loads (comfy/, cli/, service/ and dataset/ are not the trainer's)
OUR_PACKAGES = ("comfy_lora_cloud.worker", "comfy_lora_cloud.training", "comfy_lora_cloud.storage")
OUR_MODULES = ("comfy_lora_cloud", "comfy_lora_cloud.errors", "comfy_lora_cloud.models",
               "comfy_lora_cloud.settings", "comfy_lora_cloud.retry")
# what kohya's Flux LoRA training imports, and what our presets need (AdamW8bit: bitsandbytes)
KOHYA_LIBS = ("torch", "accelerate", "diffusers", "transformers", "safetensors", "toml", "voluptuous", "cv2",
              "einops", "sentencepiece", "bitsandbytes", "huggingface_hub", "google.cloud.storage")
KOHYA_MODULES = ("flux_train_network", "library.train_util", "library.config_util", "library.flux_utils",
                 "library.strategy_flux", "networks.lora_flux")
# never handed to the end-to-end run: it must not destroy this instance nor use the user's token
_STRIPPED_ENV = ("CONTAINER_ID", "CONTAINER_API_KEY", "HF_TOKEN", "LORA_CLOUD_HF_TOKEN", "VAST_API_KEY",
                 "LORA_CLOUD_VAST_API_KEY", "LORA_CLOUD_RUN_ID", "LORA_CLOUD_RUN_SPEC")
_PNG_SIZE = 64  # the end-to-end images; the parser check uses bucket-sized ones


class CheckFailed(Exception):
    """One check failed; the message says what and why."""


@dataclass
class Report:
    lines: list[tuple[str, bool, str]] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], str]) -> bool:
        start = time.monotonic()
        try:
            detail, ok = check(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # a bug in the image is what this is for: report it, go on
            detail, ok = f"{type(exc).__name__}: {exc}", False
        detail = f"{detail} [{time.monotonic() - start:.1f} s]"
        self.lines.append((name, ok, detail))
        print(f"self-test {name}: {'ok' if ok else 'FAILED'}: {detail}", flush=True)
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.lines) and all(ok for _, ok, _ in self.lines)


# ---- 1. imports -----------------------------------------------------------------------------------
def _torchvision_stand_in() -> bool:
    """Install a stand-in for ``torchvision.transforms`` when torchvision is not installed at all
    (never over an installed one that fails: that failure is the image's). True if installed."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    tv = types.ModuleType("torchvision")
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    tv.__path__ = []  # type: ignore[attr-defined]
    tr = types.ModuleType("torchvision.transforms")
    tr.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)

    class _Unavailable:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def __call__(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("torchvision is not installed in this image (self-test stand-in)")

    for name in ("Compose", "ToTensor", "Normalize", "Resize", "CenterCrop", "InterpolationMode"):
        setattr(tr, name, _Unavailable)
    tv.transforms = tr  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr
    return True


@contextlib.contextmanager
def _quiet():
    """Keep the libraries' chatter (prints, and kohya's log handlers, which hold the real stderr)
    out of the report; show the prints only when something fails."""
    sink = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield sink
    except BaseException:
        sys.stderr.write(sink.getvalue()[-4000:])
        raise
    finally:
        logging.disable(logging.NOTSET)


def _import_all(names: Sequence[str]) -> list[str]:
    failed = []
    for name in names:
        try:
            with _quiet():
                importlib.import_module(name)
        except BaseException as exc:  # SystemExit from a library's import counts too
            failed.append(f"{name} ({type(exc).__name__}: {str(exc)[:200]})")
    return failed


def _our_modules() -> list[str]:
    names = list(OUR_MODULES)
    for pkg_name in OUR_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg_name + ".")]
    return names


def check_imports(kohya_dir: str, scripts_dir: str | None) -> str:
    failed = _import_all(_our_modules())
    if scripts_dir and Path(scripts_dir).is_dir():  # the image's scripts, imported without running
        for script in sorted(Path(scripts_dir).glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"_lora_cloud_script_{script.stem}", script)
            try:
                assert spec and spec.loader
                with _quiet():
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
            except BaseException as exc:
                failed.append(f"{script} ({type(exc).__name__}: {exc})")
    failed += _import_all(KOHYA_LIBS)
    stand_in = _torchvision_stand_in()
    if not stand_in:
        failed += _import_all(["torchvision", "torchvision.transforms"])
    _kohya_on_path(kohya_dir)
    failed += _import_all(KOHYA_MODULES)
    if failed:
        raise CheckFailed("cannot import " + "; ".join(failed))
    import torch

    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.version.cuda else "CPU build"
    tv = "torchvision stand-in (not installed)" if stand_in else f"torchvision {sys.modules['torchvision'].__version__}"
    return f"torch {torch.__version__} ({cuda}), {tv}, sd-scripts from {kohya_dir}"


def _kohya_on_path(kohya_dir: str) -> None:
    if not Path(kohya_dir, "flux_train_network.py").is_file():
        raise CheckFailed(f"no flux_train_network.py in KOHYA_DIR={kohya_dir}")
    if kohya_dir not in sys.path:
        sys.path.insert(0, kohya_dir)


# ---- 2. kohya's parser on the generated configs ---------------------------------------------------
def _flatten(cfg: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def _workspace(root: Path, kohya_dir: str, images: int) -> TrainPaths:
    from PIL import Image

    (root / "tokenizers").mkdir(parents=True)
    paths = TrainPaths(root=str(root), kohya_dir=kohya_dir, tokenizer_dir=str(root / "tokenizers"))
    image_dir = Path(paths.image_dir)
    image_dir.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (768 + 64 * (i % 4), 1024), (i * 40 % 255, 90, 160)).save(image_dir / f"{i:02d}.png")
        (image_dir / f"{i:02d}.txt").write_text(f"ohwx, photo {i}", "utf-8")
    Path(paths.models_dir).mkdir(parents=True)
    for filename, _ in MODEL_FILES.values():
        (Path(paths.models_dir) / filename).touch()
    return paths


def _parse_one(mod: Any, train_util: Any, config_util: Any, strategy_base: Any, train_toml: Path) -> int:
    """sd-scripts' own parsing and checks of one generated config; returns the batches per epoch."""
    import toml  # the parser kohya uses

    parser = mod.setup_parser()
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in _flatten(toml.load(train_toml)) if k not in known)
    if unknown:
        raise CheckFailed(f"{train_toml.name}: keys sd-scripts does not know (it would ignore them): {unknown}")
    argv, sys.argv = sys.argv, ["flux_train_network.py", "--config_file", str(train_toml)]
    try:  # read_config_from_file parses sys.argv again on top of the file, as kohya does
        with _quiet():
            args = train_util.read_config_from_file(parser.parse_args(sys.argv[1:]), parser)
    except SystemExit as exc:
        raise CheckFailed(f"sd-scripts' parser rejected {train_toml} (exit {exc.code})") from None
    finally:
        sys.argv = argv
    with _quiet():
        train_util.verify_training_args(args)
        train_util.prepare_dataset_args(args, True)
        trainer = mod.FluxNetworkTrainer()
        strategy_base.LatentsCachingStrategy._strategy = None  # kohya sets it once per process; we check 9 configs
        strategy_base.LatentsCachingStrategy.set_strategy(trainer.get_latents_caching_strategy(args))
        sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
        blueprint = config_util.BlueprintGenerator(sanitizer).generate(
            config_util.load_user_config(args.dataset_config), args)
        train_group, val_group = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
        trainer.assert_extra_args(args, train_group, val_group)
        if args.sample_prompts and not train_util.load_prompts(args.sample_prompts):
            raise CheckFailed(f"{args.sample_prompts}: no sample prompts")
    if len(train_group) == 0:
        raise CheckFailed(f"{train_toml}: sd-scripts found no training images")
    return len(train_group)


def check_kohya_parser(kohya_dir: str, tmp: Path) -> str:
    _kohya_on_path(kohya_dir)
    _torchvision_stand_in()
    with _quiet():
        mod = importlib.import_module("flux_train_network")
        from library import config_util, strategy_base, train_util  # type: ignore[import-not-found]
    cmd = kohya_command("train.toml", TrainPaths(kohya_dir=kohya_dir))
    script = next(c for c in cmd if c.endswith(".py"))
    if shutil.which(cmd[0]) is None or not Path(script).is_file():
        raise CheckFailed(f"the launch command's program or script is missing: {cmd[0]}, {script}")
    done = []
    for name in PRESET_TYPES:
        for tier in TIERS:
            paths = _workspace(tmp / f"{name}-{tier}", kohya_dir, images=4)
            preset = load_preset(name, tier)
            job = TrainJob(preset=preset, plan=plan_steps(preset, 4), output_name="selftest", trigger="ohwx",
                           run_id="selftest", paths=paths)
            files = write_configs(job, paths.config_dir)
            try:
                batches = _parse_one(mod, train_util, config_util, strategy_base, files.train_toml)
            except CheckFailed:
                raise
            except Exception as exc:
                raise CheckFailed(f"preset {name} at {tier} GB: {type(exc).__name__}: {exc}") from None
            done.append(f"{name}/{tier}:{batches}")
    return f"{len(done)} configs pass sd-scripts' parser and dataset checks (preset/tier:batches {' '.join(done)})"


# ---- 3. the entrypoint end to end with the stand-in kohya -----------------------------------------
def _sub_url(url: str, prefix: str) -> str:
    return f"{url.rstrip('/')}/{prefix}" if url.startswith("gs://") else str(Path(url) / prefix)


def _seed(storage: Storage, dataset: str) -> None:
    from PIL import Image

    for i in range(3):
        buf = io.BytesIO()
        Image.new("RGB", (_PNG_SIZE, _PNG_SIZE), (60 * i, 120, 200)).save(buf, "PNG")
        storage.write_bytes(f"{dataset_prefix(dataset)}{i:02d}.png", buf.getvalue())
        storage.write_bytes(f"{dataset_prefix(dataset)}{i:02d}.txt", f"ohwx, photo {i}".encode())
    storage.write_bytes(f"{dataset_prefix(dataset)}dataset.json", json.dumps({"images": 3}).encode())
    for filename, _ in MODEL_FILES.values():  # the stand-in kohya checks they exist, nothing more
        storage.write_bytes(model_key(filename), b"self-test stand-in for " + filename.encode())


def check_end_to_end(storage_url: str, standin: str, tmp: Path, timeout: float = 300) -> str:
    if not Path(standin).is_file():
        raise CheckFailed(f"no stand-in kohya at {standin} (LORA_CLOUD_SELFTEST_KOHYA)")
    prefix = f"lora-cloud-selftest-{uuid.uuid4().hex[:12]}"
    url = _sub_url(storage_url, prefix)
    storage = open_storage(url)
    run_id = f"selftest-{uuid.uuid4().hex[:8]}"
    try:
        _seed(storage, "selftest")
        RunSpec(run_id=run_id, dataset="selftest", lora_type="character", lora_name="selftest", trigger="ohwx",
                overrides={"subset.num_repeats": 1, "max_train_epochs": 2}, max_hours=1,
                status_interval=0.2, log_interval=1.0).save(storage)
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
        env.update(LORA_CLOUD_STORAGE=url, LORA_CLOUD_RUN_ID=run_id, LORA_CLOUD_HOME=str(tmp / "home"),
                   LORA_CLOUD_KOHYA_LAUNCHER=f"{sys.executable} {standin}", PYTHONUNBUFFERED="1")
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.worker.entrypoint",
                                   "--workdir", str(tmp / "workspace")], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the entrypoint did not finish within {timeout:g} s") from None
        took = time.monotonic() - start
        status = json.loads(storage.read_bytes(run_key(run_id, "status.json")))
        if proc.returncode != 0 or status.get("state") != RunState.DONE.value:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise CheckFailed(f"the entrypoint exited {proc.returncode} with the run {status.get('state')}: "
                              f"{status.get('error') or 'see its output above'}")
        trained = checksum_file(tmp / "workspace" / "output" / "selftest.safetensors")
        remote = storage.stat(lora_key("selftest"))
        if status.get("lora") != lora_key("selftest") or remote.md5 != trained.md5 or remote.size != trained.size:
            raise CheckFailed(f"the LoRA in the bucket ({status.get('lora')}, md5 {remote.md5}) is not the "
                              f"trained file (md5 {trained.md5})")
        return (f"run {run_id} done in {took:.1f} s against {storage.url}: {status.get('step')} steps, "
                f"LoRA {remote.size} bytes, md5 verified")
    finally:
        for top in ("datasets/", "models/", "runs/", "loras/"):
            with contextlib.suppress(LoraCloudError, OSError):
                storage.delete_prefix(top)
        if not storage_url.startswith("gs://"):
            shutil.rmtree(url, ignore_errors=True)


# ---- command line -------------------------------------------------------------------------------
def run_self_test(storage: str | None = None, workdir: str | None = None, *, kohya_dir: str | None = None,
                  standin: str | None = None, scripts_dir: str | None = DEFAULT_SCRIPTS,
                  checks: Sequence[str] = ("imports", "kohya parser", "end to end")) -> int:
    """Run the checks; print one line each and a verdict. Returns the exit status (0: all passed)."""
    kohya_dir = kohya_dir or os.environ.get("KOHYA_DIR", "/opt/sd-scripts")
    standin = standin or os.environ.get("LORA_CLOUD_SELFTEST_KOHYA", DEFAULT_STANDIN)
    base = Path(workdir or os.environ.get("LORA_CLOUD_WORKDIR") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lora-cloud-selftest-", dir=base))
    report = Report()
    try:
        if "imports" in checks:
            report.run("imports", lambda: check_imports(kohya_dir, scripts_dir))
        if "kohya parser" in checks:
            report.run("kohya parser", lambda: check_kohya_parser(kohya_dir, tmp / "parser"))
        if "end to end" in checks:
            report.run("end to end", lambda: check_end_to_end(storage or str(tmp / "bucket"), standin, tmp / "e2e"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("SELF-TEST PASSED" if report.ok else "SELF-TEST FAILED", flush=True)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lora-cloud-trainer --self-test", description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", default=os.environ.get("LORA_CLOUD_STORAGE"),
                    help="the bucket (gs://...) or folder to run against; default a temporary folder")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", action="append", choices=("imports", "kohya parser", "end to end"))
    args = ap.parse_args(argv)
    return run_self_test(args.storage, args.workdir, checks=args.only or ("imports", "kohya parser", "end to end"))


if __name__ == "__main__":
    sys.exit(main())
