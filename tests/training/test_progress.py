"""kohya's console output -> events, fed in arbitrary chunks (a pipe splits lines anywhere, and tqdm
redraws its bar with \\r on stderr)."""

from __future__ import annotations

from comfy_lora_cloud.training.progress import ProgressParser

KOHYA = (
    "running training / 学習開始\n"
    "  num batches per epoch / 1epochのバッチ数: 150\n"
    "  num epochs / epoch数: 8\n"
    "  total optimization steps / 学習ステップ数: 1200\n"
    "steps:   0%|          | 0/1200 [00:00<?, ?it/s]\r"
    "\nepoch 1/8\n\n"
    "steps:   0%|          | 1/1200 [00:04<1:20:00,  4.02s/it, avr_loss=0.412]\r"
    "steps:  12%|█▎        | 150/1200 [10:03<1:10:21,  4.02s/it, avr_loss=0.398]\r"
    "\nsaving checkpoint: /workspace/output/cat-000001.safetensors\n"
    "saving state at epoch 1\n"
    "generating sample images at step / サンプル画像生成 ステップ: 300\n"
    "steps:  13%|█▎        | 151/1200 [10:05<20:00,  1.25it/s, avr_loss=0.397]\r"
    "model saved.\n"
)


def _all_events(chunks):
    p = ProgressParser()
    events = [e for c in chunks for e in p.feed(c)]
    return events + p.close()


def test_whole_output_in_one_chunk():
    events = _all_events([KOHYA])
    kinds = [e.kind for e in events]
    assert kinds == ["plan", "plan", "plan", "step", "epoch", "step", "step", "checkpoint", "state_saved", "sample",
                     "step", "model_saved"]
    plan = {k: v for e in events if e.kind == "plan" for k, v in e.data.items()}
    assert plan == {"batches_per_epoch": 150, "epochs": 8, "total_steps": 1200}
    steps = [e.data for e in events if e.kind == "step"]
    assert steps[0] == {"step": 0, "total": 1200, "sec_per_step": None, "loss": None, "eta_seconds": None}
    assert steps[1] == {"step": 1, "total": 1200, "sec_per_step": 4.02, "loss": 0.412, "eta_seconds": 4800.0}
    assert steps[3]["sec_per_step"] == 0.8  # 1.25 it/s
    assert events[4].data == {"epoch": 1, "total": 8}
    assert events[7].data == {"path": "/workspace/output/cat-000001.safetensors"}
    assert events[8].data == {"epoch": 1} and events[9].data == {"step": 300}


def test_byte_by_byte_gives_the_same_events():
    whole = _all_events([KOHYA])
    assert _all_events(list(KOHYA)) == whole
    assert _all_events([KOHYA[i:i + 7] for i in range(0, len(KOHYA), 7)]) == whole


def test_bar_without_trailing_cr_is_reported_at_once():
    p = ProgressParser()
    events = p.feed("steps:  50%|█████     | 5/10 [00:05<00:05,  1.00s/it, avr_loss=0.3]")
    assert [e.data["step"] for e in events] == [5]
    assert p.feed("\r") == []


def test_traceback_becomes_one_error_with_the_exception_line():
    out = ("Traceback (most recent call last):\n"
           "  File \"train_network.py\", line 1450, in train\n"
           "    loss = self.process_batch(batch)\n"
           "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
           "steps:   1%|          | 2/200 [00:02<03:20,  1.00s/it, avr_loss=0.5]\r")
    events = _all_events([out])
    assert [e.kind for e in events] == ["error", "step"]
    assert events[0].data["message"].startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert "process_batch" in events[0].data["traceback"]


def test_traceback_at_end_of_output_is_flushed_on_close():
    p = ProgressParser()
    assert p.feed("Traceback (most recent call last):\n  File \"x.py\", line 1\n") == []
    (event,) = p.close()
    assert event.kind == "error" and "File" in event.data["message"]


def test_no_data_found_is_an_error_hint():
    (event,) = _all_events(["No data found. Please verify arguments (train_data_dir must be ...)\n"])
    assert event.kind == "error" and "no images" in event.data["message"]


def test_unknown_lines_and_garbage_are_ignored():
    assert _all_events(["hello\n", "\x00\xff\r", "steps: weird |\n", "epoch x/y\n"]) == []
