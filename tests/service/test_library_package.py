"""The library's public face: every name it promises resolves to the object its module defines,
and loading it imports none of its modules (the offload worker is started as a module of this
package, and must not be imported twice on the way)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import comfy_lora_cloud
from comfy_lora_cloud.service import library

ROOT = Path(comfy_lora_cloud.__file__).resolve().parents[1]


def test_every_public_name_resolves_to_its_module():
    assert sorted(library.__all__) == sorted(library._HOMES)
    for name, home in library._HOMES.items():
        module = importlib.import_module(f"{library.__name__}.{home}")
        assert getattr(library, name) is getattr(module, name), name
    assert set(library.__all__) <= set(dir(library))


def test_a_name_it_does_not_have_is_an_attribute_error():
    try:
        library.store  # noqa: B018 - the old module is gone, and is not faked
    except AttributeError as exc:
        assert "store" in str(exc)
    else:
        raise AssertionError("library.store resolved")


def test_the_worker_entry_starts_without_importing_itself_twice(tmp_path):
    """``python -m ...offload`` with warnings as errors: a package that imported its own
    ``offload`` on the way would make runpy warn (and the worker run a second copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-W", "error", "-m", "comfy_lora_cloud.service.library.offload"],
                          input=b"", capture_output=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == b""  # no job, no frame
