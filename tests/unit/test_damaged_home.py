"""A damaged home: the last good settings kept on disk (``<home>/.last-good/``), the load that falls
back on them file by file, a damaged state store set aside and rebuilt, and a fresh app (as
ComfyUI builds it) that still guards over such a home."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import tomli_w

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import Instance, RunState, RunStatus
from comfy_lora_cloud.providers.base import run_label
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.home.settings_files import load_settings
from comfy_lora_cloud.service.home.state import REBUILD_KEY, StateStore
from comfy_lora_cloud.service.guard.store_rebuild import first_sightings
from comfy_lora_cloud.settings import LAST_GOOD_DIR, LastGood, set_value
from comfy_lora_cloud.storage import LocalStorage, layout
from tests.unit.test_wiring import one_guard_round, world  # noqa: F401 - world: the fake vast.ai with an orphan and a live run

KEY = "vast-key-0123456789abcdef"


def home_with(home: Path, config: dict | bytes, secrets: dict | None = None) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(config if isinstance(config, bytes) else tomli_w.dumps(config).encode())
    if secrets is not None:
        (home / "secrets.toml").write_text(tomli_w.dumps(secrets))
        (home / "secrets.toml").chmod(0o600)
    return home


# ---- the copies ---------------------------------------------------------------------------------
def test_a_clean_load_keeps_private_copies(clean_env):
    home_with(clean_env, {"max_dph": 1.5}, {"vast_api_key": KEY})
    loaded = load_settings(clean_env)
    assert loaded.problems == () and loaded.settings.max_dph == 1.5
    folder = clean_env / LAST_GOOD_DIR
    assert (folder / "config.toml").read_bytes() == (clean_env / "config.toml").read_bytes()
    assert (folder / "secrets.toml").read_bytes() == (clean_env / "secrets.toml").read_bytes()
    assert (folder / "secrets.toml").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_file_never_becomes_the_last_good_one(clean_env):
    home_with(clean_env, {"max_dph": 1.5})
    load_settings(clean_env)
    (clean_env / "config.toml").write_text("max_dph = 1.5 oops\n")
    loaded = load_settings(clean_env)
    assert loaded.settings.max_dph == 1.5 and "cannot read config.toml" in loaded.problem
    assert "its last good copy" in loaded.problem
    assert (clean_env / LAST_GOOD_DIR / "config.toml").read_text() == "max_dph = 1.5\n"


def test_a_refused_value_gives_way_alone(clean_env):
    home_with(clean_env, {"max_dph": 1.5, "max_month_usd": 20.0})
    load_settings(clean_env)
    home_with(clean_env, {"max_dph": 0.5, "max_month_usd": -5})
    loaded = load_settings(clean_env)
    assert loaded.settings.max_dph == 0.5  # the file's other values hold
    assert loaded.settings.max_month_usd == 20.0  # its last good value
    assert "max_month_usd refused" in loaded.problem and "last good value" in loaded.problem


def test_never_a_good_copy_means_the_built_in_limits(clean_env):
    home_with(clean_env, b"max_dph = 9\n\xff\xfe")
    loaded = load_settings(clean_env)
    assert loaded.settings.max_dph == 2.0 and "not UTF-8" in loaded.problem and "built-in" in loaded.problem
    assert loaded.storage_unknown  # the storage setting may have been in the lost file
    with pytest.raises(ConfigError, match="cannot read config.toml: not UTF-8"):
        load_settings(clean_env, fall_back=False)


def test_a_refused_secret_is_never_shown(clean_env):
    home_with(clean_env, {}, {"vast_api_key": KEY, "webhook_url": "ftp://hunter2-secret-host/x"})
    loaded = load_settings(clean_env)
    assert loaded.settings.secret("vast_api_key") == KEY
    assert "webhook_url refused" in loaded.problem and "hunter2" not in loaded.problem and KEY not in loaded.problem


def test_a_refused_environment_value_gives_way_to_the_files(clean_env, monkeypatch):
    home_with(clean_env, {"max_run_hours": 3.0})
    monkeypatch.setenv("LORA_CLOUD_MAX_RUN_HOURS", "0")
    loaded = load_settings(clean_env)
    assert loaded.settings.max_run_hours == 3.0 and "LORA_CLOUD_MAX_RUN_HOURS" in loaded.problem
    with pytest.raises(ConfigError, match="max_run_hours"):
        load_settings(clean_env, fall_back=False)


def test_the_copy_is_replaced_atomically(clean_env, monkeypatch):
    """A write that fails half-way leaves the old copy whole, and no temporary file behind."""
    last_good = LastGood(clean_env)
    last_good.remember("secrets.toml", b'vast_api_key = "old-key-000000"\n')

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        last_good.remember("secrets.toml", b'vast_api_key = "new-key-111111"\n')
    assert last_good.read("secrets.toml") == b'vast_api_key = "old-key-000000"\n'
    assert [p.name for p in (clean_env / LAST_GOOD_DIR).iterdir()] == ["secrets.toml"]


def test_config_set_keeps_the_copy(clean_env):
    set_value(clean_env, "max_dph", "1.25")
    assert "max_dph = 1.25" in (clean_env / LAST_GOOD_DIR / "config.toml").read_text()
    set_value(clean_env, "vast_api_key", KEY)
    assert (clean_env / LAST_GOOD_DIR / "secrets.toml").stat().st_mode & 0o777 == 0o600


# ---- the state store ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["folder", "garbage"])
def test_a_damaged_store_is_set_aside_never_deleted(tmp_path, damage):
    path = tmp_path / "state.db"
    if damage == "folder":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    else:
        path.write_bytes(b"not a database " * 300)
    store = StateStore.open(path, clock=lambda: 1_800_000_000.0)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.db.damaged-20270115T")]
    assert len(aside) == 1
    assert (aside[0] / "keep.txt").read_text() == "mine" if damage == "folder" else aside[0].read_bytes()[:15] == b"not a database "
    assert store.rebuild_due()["set_aside"] == str(aside[0])
    assert store.list_runs() == []  # a working store


def test_a_damaged_store_that_cannot_be_moved_still_gives_a_store(tmp_path, monkeypatch):
    """A read-only home: the guard still gets a working store (its own, temporary), told why."""
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database " * 300)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    store = StateStore.open(path)
    monkeypatch.undo()
    assert store.stands_for == path and store.path != path
    assert store.list_runs() == [] and "could not be moved" in store.rebuild_due()["set_aside"]
    assert path.read_bytes()[:15] == b"not a database "  # left as it was


def test_a_healthy_store_is_left_alone(tmp_path):
    StateStore(tmp_path / "state.db").set_kv("x", "1")
    store = StateStore.open(tmp_path / "state.db")
    assert store.get_kv("x") == "1" and store.get_kv(REBUILD_KEY) is None
    assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == []


def test_a_store_another_process_just_replaced_is_not_set_aside_again(tmp_path, monkeypatch):
    """Two processes saw the damage; the first set it aside and started a fresh store. The second
    looks again under the repair lock and uses that store, with what the first wrote there."""
    import comfy_lora_cloud.service.home.state as state_module

    path = tmp_path / "state.db"
    path.write_bytes(b"not a database " * 300)
    first = StateStore.open(path)
    first.set_kv("intent", "a launch recorded by the first process")
    looks = iter(["database disk image is malformed"])  # what the second process saw a moment ago
    real = state_module.damage_of
    monkeypatch.setattr(state_module, "damage_of", lambda p, timeout=30.0: next(looks, None) or real(p, timeout))
    second = StateStore.open(path)
    assert second.get_kv("intent") == "a launch recorded by the first process"
    assert len([p for p in tmp_path.iterdir() if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))]) == 1


def test_first_seen_comes_back_from_the_bucket_clock(tmp_path):
    """The run's age is the time between its spec's write and its last status write (both the
    bucket's clock); an instance with no run there counts from now."""
    storage = LocalStorage(tmp_path / "bucket")
    storage.write_bytes(layout.run_key("r1", "spec.json"), b"{}")
    storage.write_bytes(layout.run_key("r1", "status.json"),
                        json.dumps(RunStatus(run_id="r1", state=RunState.TRAINING).to_dict()).encode())
    base = time.time()
    os.utime(tmp_path / "bucket" / "runs" / "r1" / "spec.json", (base - 5 * 3600, base - 5 * 3600))
    os.utime(tmp_path / "bucket" / "runs" / "r1" / "status.json", (base - 60, base - 60))
    now = 2_000_000_000.0
    live = Instance(id="1", label=run_label("r1"), run_id="r1")
    stray = Instance(id="2", label=run_label("nowhere"), run_id="nowhere")
    seen = first_sightings(storage, [live, stray], now, {"2": now - 100})
    assert seen["1"][1] == pytest.approx(now - (5 * 3600 - 60), abs=2)
    assert seen["2"][1] == now - 100
    store = StateStore(tmp_path / "state.db")
    store.seed_sightings(seen)
    store.seed_sightings({"1": (live, now)})  # never later than it was
    assert {r["id"]: r["created_at"] for r in store.list_instances()}["1"] == pytest.approx(seen["1"][1])


# ---- a fresh app over a damaged home still guards ---------------------------------------------
def test_a_fresh_app_over_a_damaged_home_still_guards(world, clean_env):  # noqa: F811
    fake, instances = world
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "config.toml").write_text("max_run_usd = 2.0 oops\n")
    (clean_env / "state.db").mkdir()
    app, events = one_guard_round(clean_env)
    assert fake.state.get(int(instances["orphan"].id)) is None
    assert fake.state.get(int(instances["elsewhere"].id)) is not None
    told = {d.get("problem") for e, d in events if d.get("kind") == "problem"}
    assert {"settings", "state_store"} <= told, events
    result = asyncio.run(app.guard_pass(grace_s=0.0))  # reported again on the next round
    assert any(p.kind == "settings" for p in result.problems)
    with pytest.raises(ConfigError):
        App.open(clean_env, fall_back=False)


def test_a_command_over_a_damaged_store_sets_it_aside_and_goes_on(clean_env):
    from typer.testing import CliRunner

    from comfy_lora_cloud.cli.main import app as cli_app

    clean_env.mkdir(parents=True)
    (clean_env / "state.db").write_bytes(b"this is not a database " * 400)
    r = CliRunner().invoke(cli_app, ["--json", "costs", "--offline"])
    assert r.exit_code == 0, r.output
    assert [p.name[:17] for p in clean_env.iterdir() if "damaged" in p.name] == ["state.db.damaged-"]
    assert StateStore(clean_env / "state.db").rebuild_due() is not None  # the next guard pass rebuilds it


def test_config_show_names_the_problem_and_what_is_in_force(clean_env):
    from typer.testing import CliRunner

    from comfy_lora_cloud.cli.main import app as cli_app

    home_with(clean_env, {"max_dph": 1.5})
    load_settings(clean_env)
    (clean_env / "config.toml").write_text("max_dph = 1.5 oops\n")
    r = CliRunner().invoke(cli_app, ["--json", "config", "show"])
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    assert data["max_dph"] == 1.5 and "cannot read config.toml" in data["problems"][0]


# ---- repairing a damaged file --------------------------------------------------------------------
def test_config_set_repairs_a_file_that_cannot_be_read(clean_env):
    home_with(clean_env, {"max_dph": 1.5, "max_run_usd": 7.0}, {"vast_api_key": KEY})
    load_settings(clean_env)
    (clean_env / "config.toml").write_text("max_run_usd = 2.0 oops\n")
    assert set_value(clean_env, "max_run_usd", "2.0") is False
    loaded = load_settings(clean_env)
    assert loaded.problems == ()
    assert (loaded.settings.max_dph, loaded.settings.max_run_usd) == (1.5, 2.0)  # the rest from the copy
    aside = [p for p in clean_env.iterdir() if p.name.startswith("config.toml.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == "max_run_usd = 2.0 oops\n"  # kept for the user


def test_config_set_repairs_a_damaged_secrets_file_from_its_copy_keeping_the_keys(clean_env):
    home_with(clean_env, {}, {"vast_api_key": KEY})
    load_settings(clean_env)
    (clean_env / "secrets.toml").write_bytes(b"\xff\xfe not toml")
    set_value(clean_env, "hf_token", "hf_" + "a" * 30)
    loaded = load_settings(clean_env)
    assert loaded.problems == () and loaded.settings.secret("vast_api_key") == KEY
    assert (clean_env / "secrets.toml").stat().st_mode & 0o777 == 0o600
    aside = next(p for p in clean_env.iterdir() if p.name.startswith("secrets.toml.damaged-"))
    assert aside.stat().st_mode & 0o777 == 0o600


def test_one_refused_value_does_not_stop_setting_another(clean_env):
    home_with(clean_env, {"max_month_usd": -5})
    set_value(clean_env, "max_dph", "3")  # validated on its own, not with the file's -5
    set_value(clean_env, "max_month_usd", None)  # and the bad one can be removed
    loaded = load_settings(clean_env)
    assert loaded.problems == () and loaded.settings.max_dph == 3.0
    with pytest.raises(ConfigError, match="max_dph"):
        set_value(clean_env, "max_dph", "-1")
