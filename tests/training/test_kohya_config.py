"""The files and command kohya gets."""

from __future__ import annotations

import tomllib

from comfy_lora_cloud.training.kohya_config import TrainJob, TrainPaths, kohya_command, write_configs
from comfy_lora_cloud.training.presets import load_preset, plan_steps


def _job(**kw):
    preset = load_preset(kw.pop("type", "character"), kw.pop("vram", 24), kw.pop("overrides", None))
    return TrainJob(preset=preset, plan=plan_steps(preset, 15), output_name="anna", trigger="ohwx woman",
                    run_id="r7", **kw)


def _flat(path):
    return {k: v for table in tomllib.loads(path.read_text()).values() for k, v in table.items()}


def test_image_layout_and_kohya_essentials(tmp_path):
    files = write_configs(_job(), tmp_path, config_dir="/workspace/config")
    t = _flat(files.train_toml)
    assert t["pretrained_model_name_or_path"] == "/workspace/models/flux1-dev.safetensors"
    assert (t["ae"], t["clip_l"], t["t5xxl"]) == ("/workspace/models/ae.safetensors",
                                                 "/workspace/models/clip_l.safetensors",
                                                 "/workspace/models/t5xxl_fp16.safetensors")
    assert t["dataset_config"] == "/workspace/config/dataset.toml"
    assert t["sample_prompts"] == "/workspace/config/prompts.txt"
    assert (t["output_dir"], t["output_name"], t["max_train_epochs"]) == ("/workspace/output", "anna", 8)
    assert t["metadata_trigger_phrase"] == "ohwx woman" and "r7" in t["training_comment"]
    assert "max_train_steps" not in t
    ds = tomllib.loads(files.dataset_toml.read_text())
    (dataset,) = ds["datasets"]
    (subset,) = dataset.pop("subsets")
    assert dataset["resolution"] == 1024 and dataset["batch_size"] == 1
    assert subset == {**subset, "image_dir": "/workspace/dataset", "num_repeats": 10, "caption_extension": ".txt",
                      "class_tokens": "ohwx woman"}
    assert files.command == ["accelerate", "launch", "--num_cpu_threads_per_process", "1", "--mixed_precision", "bf16",
                             "/opt/sd-scripts/flux_train_network.py", "--config_file", "/workspace/config/train.toml"]


def test_prompts_file_has_kohya_options_and_the_trigger(tmp_path):
    files = write_configs(_job(), tmp_path)
    lines = files.prompts.read_text().splitlines()
    assert lines[0] == "ohwx woman, portrait photo, soft window light --w 1024 --h 1024 --s 20 --g 3.5 --d 42"
    assert len(lines) == 2


def test_no_prompts_means_no_sampling(tmp_path):
    files = write_configs(_job(sample_prompts=[]), tmp_path)
    t = _flat(files.train_toml)
    assert files.prompts is None and "sample_prompts" not in t and "sample_every_n_epochs" not in t


def test_local_paths_for_a_local_run(tmp_path):
    job = _job(paths=TrainPaths(root=str(tmp_path / "w"), kohya_dir="/k"))
    files = write_configs(job, tmp_path / "w" / "config")
    t = _flat(files.train_toml)
    assert t["output_dir"] == str(tmp_path / "w" / "output")
    assert t["dataset_config"] == str(tmp_path / "w" / "config" / "dataset.toml")


def test_resume_command_passes_initial_epoch():
    cmd = kohya_command("/c/train.toml", launcher=["python", "fake.py"], resume="/o/anna-000003-state", initial_epoch=4)
    assert cmd == ["python", "fake.py", "--config_file", "/c/train.toml", "--resume", "/o/anna-000003-state",
                   "--initial_epoch", "4"]
