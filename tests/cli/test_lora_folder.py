"""Where a downloaded LoRA goes has one rule (``App.loras_dir``): Await LoRA and the Cloud LoRA
Loader download there, the sidebar's LoRA listing looks there for its ``local`` ("in ComfyUI")
mark, and ``lora download`` without ``--to`` downloads there, with ``comfyui_loras_dir`` set or
not. The CLI runs through its entry point; the nodes' calls are the service functions they make
(ComfyUI's ``comfy_api`` is not importable here), and a check on ``comfy/nodes/training.py`` pins that the
nodes leave the folder to the app's nouns."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.comfy.nodes.runs import comfy_lora_name, library_lora_name
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.library import comfy_lora_folder
from comfy_lora_cloud.storage import LocalStorage, layout

REPO = Path(__file__).resolve().parents[2]
LORA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"x" * 1000


def _fake_comfyui(root: Path) -> Path:
    """What find_comfyui recognises as a ComfyUI checkout."""
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    return root


@pytest.mark.parametrize("setting", [True, False], ids=["comfyui_loras_dir-set", "comfyui_loras_dir-unset"])
async def test_nodes_sidebar_and_cli_agree_on_the_lora_folder(cli, clean_env, tmp_path, monkeypatch, setting):
    comfyui = _fake_comfyui(tmp_path / "ComfyUI")
    own_loras = comfyui / "models" / "loras"  # what ComfyUI's folder_paths says inside ComfyUI
    env: dict[str, str] = {}
    if setting:
        configured = tmp_path / "elsewhere" / "models" / "loras"
        cli("config", "set", "comfyui_loras_dir", str(configured))
        expected = configured / "lora_cloud"
    else:
        env["COMFYUI_PATH"] = str(comfyui)  # the CLI beside the nodes finds the same ComfyUI
        expected = own_loras / "lora_cloud"
    store = LocalStorage(clean_env / "bucket")  # the home's embedded default storage
    store.write_bytes(layout.lora_key("cat"), LORA)
    done = RunStatus(run_id="r1", state=RunState.DONE, lora=layout.lora_key("cat"))
    store.write_bytes(layout.run_key("r1", "status.json"), json.dumps(done.to_dict()).encode())

    # the app as ComfyUI's wiring builds it (comfy/wiring.py)
    app = App.open(clean_env, loras_dir=comfy_lora_folder(own_loras))
    assert app.loras_dir == expected

    listed = await app.library.lora_listing()
    assert [(lo.lora.name, lo.local) for lo in listed.loras] == [("cat", False)]

    # Await LoRA
    path = await app.runs.fetch_lora("r1", "cat", poll_s=0.01)
    name = comfy_lora_name(path)
    assert (name, path) == ("lora_cloud/cat.safetensors", expected / "cat.safetensors")
    # the sidebar's listing now says it is in ComfyUI
    listed = await app.library.lora_listing()
    assert [(lo.lora.name, lo.local) for lo in listed.loras] == [("cat", True)]
    # the Cloud LoRA Loader finds it there (and downloads there when missing)
    path.unlink()
    got = await app.library.download_lora(library_lora_name(name))
    assert Path(got.path) == path and path.read_bytes() == LORA

    # `lora download` without --to puts it at the same place
    path.unlink()
    got = cli.json("lora", "download", "cat", **env)
    assert Path(got["path"]) == path and path.read_bytes() == LORA


def test_without_the_setting_or_a_comfyui_the_cli_downloads_into_the_home(cli, clean_env):
    LocalStorage(clean_env / "bucket").write_bytes(layout.lora_key("cat"), LORA)
    got = cli.json("lora", "download", "cat")
    assert Path(got["path"]) == clean_env / "loras" / "cat.safetensors"
    assert App.open(clean_env).loras_dir == clean_env / "loras"


def test_the_nodes_download_where_the_app_says():
    """Await LoRA and the Cloud LoRA Loader call the app's nouns (``app.runs.fetch_lora``,
    ``app.library.download_lora``) without a folder, so the file lands in ``app.loras_dir``, never
    in ComfyUI's folder_paths (a second rule that ignored ``comfyui_loras_dir``)."""
    source = (REPO / "comfy_lora_cloud" / "comfy" / "nodes" / "training.py").read_text()
    calls = [c for c in ast.walk(ast.parse(source)) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
             and c.func.attr in ("fetch_lora", "download_lora")]
    assert sorted(ast.unparse(c.func) for c in calls) == ["app.library.download_lora", "app.runs.fetch_lora"]
    for call in calls:  # (run id, LoRA name) and (LoRA name): no folder of their own
        assert len(call.args) == (2 if call.func.attr == "fetch_lora" else 1), ast.unparse(call)
        assert "dest_dir" not in [k.arg for k in call.keywords], ast.unparse(call)
    assert 'get_folder_paths("loras")' not in source


def test_a_setting_that_already_names_the_pack_folder_is_not_nested(clean_env, tmp_path):
    """Older versions took comfyui_loras_dir as the download folder itself (the remote ComfyUI's
    supervisor set it so): a value ending in lora_cloud/ stays the folder, never lora_cloud/lora_cloud/."""
    from comfy_lora_cloud.settings import set_value

    folder = tmp_path / "ComfyUI" / "models" / "loras" / "lora_cloud"
    set_value(clean_env, "comfyui_loras_dir", str(folder))
    assert App.open(clean_env).loras_dir == folder
