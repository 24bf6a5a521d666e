"""The CLI through its entry point, on the embedded default (local storage)."""

import hashlib
import stat

from comfy_lora_cloud.storage import LocalStorage

SECRET = "vk_abcdefghijklmnopqrstuvwxyz012345"


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_help_on_every_command(cli):
    for args in (["--help"], ["dataset", "--help"], ["dataset", "upload", "--help"], ["lora", "--help"],
                 ["sync", "push", "--help"], ["config", "set", "--help"]):
        assert "Usage" in cli(*args).stdout


def test_upload_list_reupload_download(cli, tiny, tmp_path, clean_env):
    out = cli.json("dataset", "upload", str(tiny), "--name", "tiny")
    assert out["files"] == 16 and out["bytes"] > 0  # 8 images + 8 captions; SOURCES.md stays home
    listed = cli.json("dataset", "list")
    assert listed == [listed[0]] and listed[0]["name"] == "tiny"
    assert listed[0]["images"] == 8 and listed[0]["captioned"] == 8
    # the files are in the embedded default: <home>/bucket/datasets/tiny/
    bucket = clean_env / "bucket" / "datasets" / "tiny"
    assert (bucket / "astronaut.jpg").is_file() and (bucket / "dataset.json").is_file()
    assert not (bucket / "SOURCES.md").exists()  # only images, captions and the manifest travel
    again = cli.json("dataset", "upload", str(tiny), "--name", "tiny")
    assert again["files"] == 0 and again["bytes"] == 0 and again["skipped"] >= 16
    dest = tmp_path / "dl"
    got = cli.json("dataset", "download", "tiny", str(dest))
    assert got["files"] >= 17
    for img in tiny.glob("*.jpg"):
        assert _md5(dest / img.name) == _md5(img)
    assert "tiny" in cli("dataset", "list").stdout  # the human table


def test_bad_names_exit_2_and_write_nothing(cli, tiny, clean_env):
    for bad in ("../escape", "a/b", "bad\tname", ".."):
        proc = cli("dataset", "upload", str(tiny), "--name", bad, check=2)
        assert "dataset name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (clean_env / "bucket" / "datasets").exists()
    assert not any(p.name == "escape" for p in clean_env.rglob("*"))


def test_missing_things_give_clear_errors(cli, tmp_path):
    proc = cli("dataset", "download", "nope", str(tmp_path / "x"), check=3)
    assert "no dataset named 'nope'" in proc.stderr
    proc = cli("dataset", "upload", str(tmp_path / "does-not-exist"), "--name", "x", check=6)
    assert "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli("dataset", "upload", str(tmp_path / "empty"), "--name", "x", check=6)
    assert "holds no images" in proc.stderr
    proc = cli("lora", "delete", "ghost", "--yes", check=3)
    assert "no LoRA named 'ghost'" in proc.stderr


def test_delete_dataset(cli, tiny):
    cli("dataset", "upload", str(tiny), "--name", "gone")
    assert cli.json("dataset", "delete", "gone", "--yes")["deleted"] >= 17
    assert cli.json("dataset", "list") == []


def test_lora_list_download_delete(cli, clean_env, tmp_path):
    store = LocalStorage(clean_env / "bucket")
    store.write_bytes("loras/cat.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"x" * 1000)
    store.write_bytes("loras/cat.json", b'{"dataset": "cat", "preset": "character", "trigger": "ohwx"}')
    listed = cli.json("lora", "list")
    assert [lo["name"] for lo in listed] == ["cat"] and listed[0]["metadata"]["trigger"] == "ohwx"
    got = cli.json("lora", "download", "cat", "--to", str(tmp_path / "loras"))
    assert (tmp_path / "loras" / "cat.safetensors").read_bytes() == store.read_bytes("loras/cat.safetensors")
    assert got["size"] == store.stat("loras/cat.safetensors").size
    assert cli.json("lora", "delete", "cat", "--yes")["deleted"] == 2
    assert cli.json("lora", "list") == []


def test_config_set_show_masks_secrets(cli, clean_env):
    cli("config", "set", "vast_api_key", "-", input=SECRET + "\n")
    secrets = clean_env / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    shown = cli("config", "show")
    assert SECRET not in shown.stdout + shown.stderr and "**** (set)" in shown.stdout
    data = cli.json("config", "show")
    assert data["vast_api_key"] == "**** (set)"
    cli("config", "set", "max_dph", "1.25")
    assert cli.json("config", "show")["max_dph"] == 1.25
    proc = cli("config", "set", "max_dph", "cheap", check=2)
    assert "max_dph" in proc.stderr
    # verbose logging never shows it either
    proc = cli("-v", "config", "show")
    assert SECRET not in proc.stdout + proc.stderr


def test_sync_push_pull_roundtrip(cli, tiny, tmp_path):
    dry = cli.json("sync", "push", str(tiny), "workflows/test", "--dry-run")
    assert dry["dry_run"] is True
    first = cli.json("sync", "push", str(tiny), "workflows/test")
    assert first["files"] == 17  # sync moves every file, SOURCES.md included
    assert cli.json("sync", "push", str(tiny), "workflows/test")["files"] == 0
    dest = tmp_path / "pulled"
    assert cli.json("sync", "pull", "workflows/test/", str(dest))["files"] == 17
    assert _md5(dest / "coffee.jpg") == _md5(tiny / "coffee.jpg")
    proc = cli("sync", "push", str(tiny), "../up", check=2)
    assert "invalid" in proc.stderr


def test_delete_without_a_terminal_needs_yes(cli, tiny, clean_env):
    cli("dataset", "upload", str(tiny), "--name", "keep")
    proc = cli("dataset", "delete", "keep", check=2)  # subprocess: stdin is not a terminal
    assert "--yes" in proc.stderr
    proc = cli("--json", "lora", "delete", "anything", check=2)
    assert "--yes" in proc.stderr
    assert [d["name"] for d in cli.json("dataset", "list")] == ["keep"]  # nothing deleted on a guess
