"""A stand-in for ``accelerate launch flux_train_network.py`` in tests.

It reads the same ``--config_file`` (and ``--resume``/``--initial_epoch``), checks what kohya
would need (model files, images with captions), then behaves like kohya on the console (a
banner on stdout, a tqdm bar redrawn with ``\\r`` on stderr, ``epoch i/N`` lines, state saves,
samples, ``model saved.``) and on disk (per-epoch snapshots, ``-NNNNNN-state`` dirs with
``train_state.json``, samples, the final LoRA with kohya's key names and ``ss_*`` metadata).
Like kohya without ``skip_until_initial_step`` it restarts its step counter at 0 after a resume.

Knobs (environment): FAKE_KOHYA_STEP_SECONDS (sleep per step), FAKE_KOHYA_FAIL_AT_STEP (raise
there: a traceback and exit 1), FAKE_KOHYA_NO_LORA=1 (kohya's "No data found" path: exit 0 with no
file), FAKE_KOHYA_ARGV_LOG (append argv and the names of
secret-looking variables it was given as a JSON line).

For preemption tests: FAKE_KOHYA_STEP_FILE (a path, relative to the working directory, where
the overall step, counted across resumes, is written after every step: the fake vast.ai server
reads it to stop an instance "at step N"), and FAKE_KOHYA_PAUSE_AT (overall steps, comma-separated)
with FAKE_KOHYA_PAUSE_DIR: at each such step, once across every attempt (a marker file
``paused-<step>`` in that folder remembers it), stop there until killed, so that a test can
preempt the instance at exactly that step.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10 (the trainer image's Ubuntu 22.04 runs this file in its self-test)
    import tomli as tomllib

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp"}
PNG_1PX = bytes.fromhex(  # a whole 1x1 red PNG (it decodes: datasets are checked before a run)
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f00050001ff89993d1d0000000049454e44ae426082"
)


def flatten(cfg: dict) -> dict:
    flat = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], float]], metadata: dict[str, str]) -> None:
    """Write F32 tensors filled with one value: the real file format, without numpy or torch."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, (shape, value) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        data = struct.pack(f"<{n}f", *([value] * n)) if n else b""
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    os.replace(tmp, path)


def lora_tensors(rank: int, alpha: float) -> dict[str, tuple[list[int], float]]:
    # two real Flux module names, small shapes to keep files tiny
    out = {}
    for module, (inp, outp) in {"lora_unet_double_blocks_0_img_attn_qkv": (64, 192),
                                "lora_unet_single_blocks_0_linear1": (64, 448)}.items():
        out[f"{module}.lora_down.weight"] = ([rank, inp], 0.01)
        out[f"{module}.lora_up.weight"] = ([outp, rank], 0.0)
        out[f"{module}.alpha"] = ([], float(alpha))
    return out


def bar(step: int, total: int, loss: float) -> str:
    pct = int(100 * step / total) if total else 0
    filled = "█" * (pct // 10)
    return f"steps: {pct:3d}%|{filled:<10}| {step}/{total} [00:{step % 60:02d}<00:10,  1.50s/it, avr_loss={loss:.3g}]"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config_file", required=True)
    p.add_argument("--resume")
    p.add_argument("--initial_epoch", type=int)
    args = p.parse_args()
    if os.environ.get("FAKE_KOHYA_ARGV_LOG"):
        with open(os.environ["FAKE_KOHYA_ARGV_LOG"], "a") as f:
            secret_env = sorted(k for k in os.environ if "KEY" in k or "TOKEN" in k or "CREDENTIALS" in k)
            f.write(json.dumps({"argv": sys.argv[1:], "secret_env": secret_env}) + "\n")
    cfg = flatten(tomllib.loads(Path(args.config_file).read_text()))
    for opt in ("pretrained_model_name_or_path", "ae", "clip_l", "t5xxl"):
        if not Path(cfg[opt]).is_file():
            raise SystemExit(f"model file missing: {cfg[opt]}")
    assert cfg["network_module"] == "networks.lora_flux"
    ds = tomllib.loads(Path(cfg["dataset_config"]).read_text())["datasets"][0]
    sub = ds["subsets"][0]
    images = [x for x in Path(sub["image_dir"]).iterdir() if x.suffix.lower() in IMAGE_EXT]
    if os.environ.get("FAKE_KOHYA_NO_LORA") or not images:
        print("No data found. Please verify arguments", flush=True)
        return 0
    missing = [x.name for x in images if not x.with_suffix(".txt").is_file()]
    assert not missing, f"captions missing: {missing}"
    out, name = Path(cfg["output_dir"]), cfg["output_name"]
    out.mkdir(parents=True, exist_ok=True)
    batch = ds.get("batch_size", 1)
    per_epoch = -(-len(images) * sub["num_repeats"] // batch)
    epochs = cfg["max_train_epochs"]
    total = per_epoch * epochs
    start_epoch = 0
    if args.resume:
        state = json.loads((Path(args.resume) / "train_state.json").read_text())
        assert (Path(args.resume) / "model.safetensors").is_file()
        start_epoch = (args.initial_epoch - 1) if args.initial_epoch else state["current_epoch"]
        print(f"load train state from {args.resume}: {json.dumps(state)}", flush=True)
    print("running training / 学習開始", flush=True)
    print(f"  num train images * repeats / 学習画像の数×繰り返し回数: {len(images) * sub['num_repeats']}",
          flush=True)
    print(f"  num batches per epoch / 1epochのバッチ数: {per_epoch}", flush=True)
    print(f"  num epochs / epoch数: {epochs}", flush=True)
    print(f"  total optimization steps / 学習ステップ数: {total}", flush=True)
    delay = float(os.environ.get("FAKE_KOHYA_STEP_SECONDS", "0"))
    fail_at = int(os.environ.get("FAKE_KOHYA_FAIL_AT_STEP", "0"))
    step_file = os.environ.get("FAKE_KOHYA_STEP_FILE")
    pause_at = {int(x) for x in os.environ.get("FAKE_KOHYA_PAUSE_AT", "").split(",") if x.strip()}
    pause_dir = Path(os.environ.get("FAKE_KOHYA_PAUSE_DIR") or ".")
    rank, alpha = cfg["network_dim"], cfg["network_alpha"]
    step = 0  # kohya restarts its counter after a resume: it cannot skip within an epoch
    sys.stderr.write(bar(0, total, 0.5).replace("1.50s/it", "?it/s") + "\r")
    for epoch in range(start_epoch, epochs):
        print(f"\nepoch {epoch + 1}/{epochs}\n", flush=True)
        for _ in range(per_epoch):
            step += 1
            if fail_at and start_epoch * per_epoch + step >= fail_at:
                print("Traceback (most recent call last):\n  File \"train_network.py\", line 1450, in train\n"
                      "    loss = self.process_batch(batch)\n"
                      "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                      file=sys.stderr, flush=True)
                return 1
            sys.stderr.write(bar(step, total, 0.4 - 0.0001 * step) + "\r")
            sys.stderr.flush()
            overall = start_epoch * per_epoch + step
            if step_file:
                Path(step_file).with_suffix(".tmp").write_text(str(overall))
                os.replace(Path(step_file).with_suffix(".tmp"), step_file)
            if overall in pause_at and not (pause_dir / f"paused-{overall}").exists():
                (pause_dir / f"paused-{overall}").write_text(str(os.getpid()))
                while True:  # until the instance is stopped under us
                    time.sleep(0.05)
            if delay:
                time.sleep(delay)
        e = epoch + 1
        if cfg.get("save_every_n_epochs") and e < epochs:
            snap = out / f"{name}-{e:06d}.safetensors"
            print(f"\nsaving checkpoint: {snap}", flush=True)
            write_safetensors(snap, lora_tensors(rank, alpha), {"ss_epoch": str(e)})
            if cfg.get("save_state"):
                print(f"saving state at epoch {e}", flush=True)
                state_dir = out / f"{name}-{e:06d}-state"
                state_dir.mkdir(exist_ok=True)
                (state_dir / "optimizer.bin").write_bytes(os.urandom(2048))
                write_safetensors(state_dir / "model.safetensors", lora_tensors(rank, alpha), {})
                (state_dir / "train_state.json").write_text(json.dumps({"current_epoch": e, "current_step": step}))
        every = cfg.get("sample_every_n_epochs")
        if every and e % every == 0 and cfg.get("sample_prompts"):
            print(f"generating sample images at step / サンプル画像生成 ステップ: {step}", flush=True)
            (out / "sample").mkdir(exist_ok=True)
            (out / "sample" / f"{name}_e{e:06d}_00_20260101000000_42.png").write_bytes(PNG_1PX)
    meta = {
        "ss_network_module": "networks.lora_flux", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
        "ss_output_name": name, "ss_learning_rate": str(cfg["learning_rate"]), "ss_num_epochs": str(epochs),
        "ss_steps": str(step), "ss_seed": str(cfg.get("seed")), "ss_base_model_version": "flux1",
        "ss_guidance_scale": str(cfg.get("guidance_scale")), "ss_timestep_sampling": str(cfg.get("timestep_sampling")),
        "modelspec.architecture": "flux-1-dev/lora", "modelspec.trigger_phrase": cfg.get("metadata_trigger_phrase", ""),
    }
    write_safetensors(out / f"{name}.safetensors", lora_tensors(rank, alpha), meta)
    sys.stderr.write("\n")
    print("model saved.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
