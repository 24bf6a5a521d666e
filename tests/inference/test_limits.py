"""The inference image's start refuses limits that are no limits and ports ComfyUI cannot be
reached on: an ``inf`` max hours would keep the instance billing forever, port 0 makes ComfyUI
pick any port (the tunnel would miss it), 99999 is no port. Each is a clear error and exit 2
before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.worker.inference import Supervisor, session_limits

REPO = Path(__file__).resolve().parents[2]
IDLE, HOURS, PORT = "LORA_CLOUD_IDLE_MINUTES", "LORA_CLOUD_MAX_HOURS", "LORA_CLOUD_COMFY_PORT"

REFUSED = [
    ({HOURS: "inf"}, "LORA_CLOUD_MAX_HOURS is inf: it must be a number above 0 and at most 72"),
    ({HOURS: "nan"}, "LORA_CLOUD_MAX_HOURS is nan"),
    ({HOURS: "1e308"}, "at most 72"),
    ({HOURS: "0"}, "above 0"),
    ({HOURS: "four"}, "LORA_CLOUD_MAX_HOURS is 'four', not a number"),
    ({IDLE: "inf"}, "LORA_CLOUD_IDLE_MINUTES is inf"),
    ({IDLE: "-5"}, "LORA_CLOUD_IDLE_MINUTES is -5.0"),
    ({PORT: "0"}, "LORA_CLOUD_COMFY_PORT is 0: it must be a port from 1 to 65535"),
    ({PORT: "99999"}, "LORA_CLOUD_COMFY_PORT is 99999"),
    ({PORT: "-1"}, "LORA_CLOUD_COMFY_PORT is -1"),
    ({PORT: "8188.5"}, "not a whole number"),
    ({PORT: "9" * 5000}, "not a whole number"),
]


@pytest.mark.parametrize("env,message", REFUSED, ids=[f"{k}={v[:10]}" for e, _ in REFUSED for k, v in e.items()])
def test_out_of_range_limits_are_clear_errors(env, message):
    with pytest.raises(ConfigError) as caught:
        session_limits(env)
    assert message in caught.value.message


def test_sane_limits_and_the_defaults_pass():
    assert session_limits({}) == (20.0, 4.0, 8188)
    assert session_limits({IDLE: "0.5", HOURS: "72", PORT: "65535"}) == (0.5, 72.0, 65535)


@pytest.mark.parametrize("field,value", [("max_hours", float("inf")), ("idle_s", float("nan")), ("port", 0),
                                         ("port", 99999)])
def test_a_supervisor_built_in_code_checks_them_too(tmp_path, field, value):
    with pytest.raises(ConfigError):
        Supervisor(session_id="s1", storage=LocalStorage(tmp_path / "bucket"), workdir=tmp_path / "work",
                   command=["true"], weights=None, destroy=lambda: True, **{field: value})


@pytest.mark.parametrize("env,message", [({HOURS: "inf"}, "LORA_CLOUD_MAX_HOURS is inf"),
                                         ({PORT: "99999"}, "LORA_CLOUD_COMFY_PORT is 99999")])
def test_the_image_start_exits_2_naming_the_setting(tmp_path, env, message):
    """The image's entry point as start.sh runs it: refused before ComfyUI or any download starts."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_CLOUD_", "CONTAINER_"))}
    child_env.update({"PYTHONPATH": str(REPO), "LORA_CLOUD_HOME": str(tmp_path / "home"),
                      "LORA_CLOUD_SESSION_ID": "session-t1", "LORA_CLOUD_STORAGE": str(tmp_path / "bucket"), **env})
    done = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.worker.inference", "--workdir",
                           str(tmp_path / "work")], env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start: " + message in done.stderr
    assert not (tmp_path / "work" / "models").exists()  # nothing fetched, nothing started
