"""Fault scenarios: a damaged home at the start of a fresh ``lora-cloud instances reconcile``.

Each row damages one settings file or the state store before the pass, next to an orphan and an
instance over a budget (both must die) and a live run (kept). The pass must do its job on the
last good settings (kept in ``<home>/.last-good/`` by an earlier clean load) or, when there never
were any, on the built-in limits; report the problem in its JSON result and on stderr; and exit 9
(the damaged-home code, docs/troubleshooting.md).

One more row shows the one case where the orphan is kept: a broken config.toml that named the
bucket and never had a good copy leaves the bucket unknown, and nothing is destroyed on that doubt
(the budgets still hold).

The rows with settings damage take their budgets from the files (the harness's budget variables
are removed), so the damaged value is the one in force. Where a last good copy exists it holds
``max_run_hours = 3``, so a run 4 h in dies by it; the built-in limit (6 h) would keep it.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Callable

import tomli_w

from comfy_lora_cloud.models import RunState

from .harness import API_KEY, World, entry_point
from .registry import DEFAULT_BUDGETS, scenario
from .scenarios_guard import PRICEY, all_of, breach, orphan, ours, problem, reported

Results = list[dict[str, Any]]
DAMAGED_HOME = 9
BUDGET_VARS = tuple(f"LORA_CLOUD_{k.upper()}" for k in DEFAULT_BUDGETS)
GOOD_CONFIG = {**DEFAULT_BUDGETS, "max_run_hours": 3.0}


# ---- building the home ------------------------------------------------------------------------
def budgets_from_files(w: World) -> None:
    for var in BUDGET_VARS:
        w.env.pop(var, None)


def write(w: World, name: str, data: dict[str, Any] | bytes | str) -> None:
    w.home.mkdir(parents=True, exist_ok=True)
    body = data if isinstance(data, bytes) else data.encode() if isinstance(data, str) else tomli_w.dumps(data).encode()
    (w.home / name).write_bytes(body)
    if name == "secrets.toml":
        (w.home / name).chmod(0o600)


def clean_load(w: World) -> None:
    """A command on the clean home, as the user ran one before the damage: it keeps the copies."""
    r = subprocess.run(entry_point() + ["--json", "config", "show"], capture_output=True, text=True, env=w.env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert (w.home / ".last-good" / "config.toml").is_file() or not (w.home / "config.toml").exists()


def good_home(w: World, *, secrets: dict[str, Any] | None = None) -> None:
    budgets_from_files(w)
    write(w, "config.toml", GOOD_CONFIG)
    if secrets is not None:
        write(w, "secrets.toml", secrets)
    clean_load(w)


# ---- what every row holds ---------------------------------------------------------------------
def run_hours_in(w: World, run_id: str, hours: float, fate: str) -> str:
    """A run of ours ``hours`` into its run: ``die`` when that is past the max_run_hours in force."""
    iid = w.instance(run_id, fate, f"{hours} h into its run", age_h=hours)
    w.local_run(run_id, iid, seen_h_ago=hours)
    w.status(run_id)
    if fate == "die":
        w.expect_end(run_id, RunState.FAILED)
    return iid


def the_three(w: World, *, late_h: float = 4.0) -> None:
    """An orphan, a run past its hours (the limit in force), and a live run 1 h in: kept."""
    w.treasure(["live", "late"])
    w.orphan = orphan(w)
    run_hours_in(w, "late", late_h, "die")
    run_hours_in(w, "live", 1.0, "keep")


def damaged(kind: str, text: str) -> Callable[[World, Results], None]:
    """The pass named the problem: in its JSON problems, on stderr, and it did its job."""
    def check(w: World, results: Results) -> None:
        problem(kind, text=text)(w, results)
        assert "damaged home" in results[0]["stderr"] and text in results[0]["stderr"], results[0]["stderr"]
        assert w.orphan in results[0]["reconcile"]["destroyed"], results[0]["reconcile"]
        assert API_KEY not in json.dumps(results), "a secret reached the output"
    return check


def in_force(text: str) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        problem("settings", text=text)(w, results)
    return check


def last_good_kept(w: World, results: Results) -> None:
    """The damaged file did not become the last good copy."""
    import tomllib

    copy = tomllib.loads((w.home / ".last-good" / "config.toml").read_text())
    assert copy["max_run_hours"] == 3.0, copy


ROW = dict(expect_exit=DAMAGED_HOME)


# ---- config.toml ------------------------------------------------------------------------------
@scenario("home_config_syntax_error", "config.toml says `max_run_usd = 2.0 oops`: the last good copy holds", **ROW,
          check=all_of(damaged("settings", "cannot read config.toml"), in_force("its last good copy"),
                       breach("max_run_hours", "late"), last_good_kept))
def _config_syntax(w: World) -> None:
    good_home(w)
    the_three(w)
    write(w, "config.toml", "max_run_usd = 2.0 oops\nmax_run_hours = 24\n")


@scenario("home_config_negative_budget", "config.toml says `max_month_usd = -5`: that value gives way to its last "
          "good one, the file's other values hold", **ROW,
          check=all_of(damaged("settings", "max_month_usd refused"), in_force("max_month_usd = 10000.0"),
                       breach("max_run_hours", "late"), last_good_kept))
def _config_negative(w: World) -> None:
    good_home(w)
    the_three(w, late_h=2.5)
    write(w, "config.toml", {**GOOD_CONFIG, "max_run_hours": 2.0, "max_month_usd": -5})


@scenario("home_config_not_utf8", "config.toml is not UTF-8 text (a Latin-1 editor, a binary copied over it)", **ROW,
          check=all_of(damaged("settings", "not UTF-8"), breach("max_run_hours", "late"), last_good_kept))
def _config_not_utf8(w: World) -> None:
    good_home(w)
    the_three(w)
    write(w, "config.toml", b"max_run_hours = 24\n# caf\xe9 \xff\xfe\n")


@scenario("home_config_bad_webhook_url", 'config.toml says `webhook_url = "ftp://x"`: refused, the rest holds', **ROW,
          check=all_of(damaged("settings", "webhook_url refused"), breach("max_run_hours", "late")))
def _config_webhook(w: World) -> None:
    good_home(w)
    the_three(w)
    write(w, "config.toml", {**GOOD_CONFIG, "webhook_url": "ftp://x"})


@scenario("home_config_never_good", "config.toml is broken and no copy of it was ever good: the built-in limits "
          "(max_run_hours 6) hold", **ROW,
          check=all_of(damaged("settings", "cannot read config.toml"), in_force("no last good copy"),
                       breach("max_run_hours", "late")))
def _config_never_good(w: World) -> None:
    budgets_from_files(w)
    the_three(w, late_h=9.0)
    w.treasure(["middle"])
    run_hours_in(w, "middle", 5.0, "keep")  # inside the built-in 6 h
    write(w, "config.toml", "max_run_hours = [1\n")
    assert not (w.home / ".last-good").exists()


@scenario("home_config_never_good_storage_unknown", "config.toml, which named the bucket, is broken and was never "
          "good: the bucket is unknown, so nothing is destroyed as unowned, and the built-in limits hold", **ROW,
          check=all_of(problem("settings", text="no last good copy"), problem("bucket", "bucket id"),
                       problem("unattributed", text="nothing is destroyed as unowned"),
                       breach("max_run_hours", "late"), reported("destroyed", lambda w: [])))
def _config_never_good_no_storage(w: World) -> None:
    budgets_from_files(w)
    w.env.pop("LORA_CLOUD_STORAGE")
    w.treasure(["late"])
    w.instance("orphan", "keep", "no bucket can vouch for anything: kept on that doubt (the budgets bound it)")
    w.instance("late", "die", "9 h into its run: past the built-in 6 h", age_h=9)
    w.local_run("late", next(i for i, why in w.why.items() if why.startswith("9 h")), seen_h_ago=9)
    write(w, "config.toml", f'storage = "gs://{w.storage.bucket_name}"\nmax_run_hours = [1\n')


# ---- secrets.toml -----------------------------------------------------------------------------
@scenario("home_secrets_not_toml", "secrets.toml is garbage and the vast.ai key lives only there: its last good "
          "copy holds the key", **ROW,
          check=all_of(damaged("settings", "cannot read secrets.toml"), breach("max_run_hours", "late")))
def _secrets_garbage(w: World) -> None:
    w.env.pop("LORA_CLOUD_VAST_API_KEY", None)
    good_home(w, secrets={"vast_api_key": API_KEY})
    assert ((w.home / ".last-good" / "secrets.toml").stat().st_mode & 0o777) == 0o600
    the_three(w)
    write(w, "secrets.toml", b"vast_api_key = \"" + API_KEY.encode() + b"\n\x00\x01 garbage")


@scenario("home_secrets_bad_values", "secrets.toml with a token of the wrong type and `webhook_url = \"ftp://x\"`, "
          "never good before: the key beside them still works", **ROW,
          check=all_of(damaged("settings", "hf_token refused"), problem("settings", text="webhook_url refused"),
                       breach("max_run_hours", "late")))
def _secrets_values(w: World) -> None:
    w.env.pop("LORA_CLOUD_VAST_API_KEY", None)
    budgets_from_files(w)
    write(w, "config.toml", GOOD_CONFIG)
    the_three(w)
    write(w, "secrets.toml", {"vast_api_key": API_KEY, "hf_token": [1, 2], "webhook_url": "ftp://x"})


# ---- state.db -----------------------------------------------------------------------------------
def damaged_store(w: World, damage: Callable[[Any], None]) -> None:
    """A pricey run (over max_dph 1.0), an orphan and a live run, then the store is damaged."""
    w.treasure(["mine", "pricey"])
    ours(w, "mine", "live in the bucket: kept by the rebuilt store's pass")
    iid = w.instance("pricey", "die", "above max_dph", gpu=PRICEY)
    w.local_run("pricey", iid)
    w.status("pricey")
    w.expect_end("pricey", RunState.FAILED)
    w.orphan = orphan(w)
    w.store.list_runs()  # every connection closed: the WAL is folded into state.db
    for extra in ("state.db-wal", "state.db-shm"):
        (w.home / extra).unlink(missing_ok=True)
    damage(w.home / "state.db")


def set_aside(w: World, results: Results) -> None:
    kept = [p for p in w.home.iterdir() if p.name.startswith("state.db.damaged-")]
    assert len(kept) == 1, list(w.home.iterdir())
    assert w.store.rebuild_due() is None and w.store.list_instances(include_destroyed=True)


def folder(path: Any) -> None:
    path.unlink()
    path.mkdir()
    (path / "note.txt").write_text("someone's file")


STORE = dict(budgets={"max_dph": 1.0}, **ROW)


@scenario("home_state_db_is_a_folder", "state.db replaced by a folder: set aside, rebuilt, the guard judges as usual",
          check=all_of(damaged("state_store", "set aside"), breach("max_dph", "pricey"), set_aside,
                       lambda w, r: (next(w.home.glob("state.db.damaged-*")) / "note.txt").is_file()), **STORE)
def _db_folder(w: World) -> None:
    damaged_store(w, folder)


@scenario("home_state_db_garbage", "state.db overwritten with garbage: set aside, rebuilt", **STORE,
          check=all_of(damaged("state_store", "set aside"), breach("max_dph", "pricey"), set_aside))
def _db_garbage(w: World) -> None:
    damaged_store(w, lambda path: path.write_bytes(b"this is not a database " * 400))


@scenario("home_state_db_truncated", "state.db cut short (a full disk, a crash mid-copy): set aside, rebuilt",
          **STORE, check=all_of(damaged("state_store", "set aside"), breach("max_dph", "pricey"), set_aside))
def _db_truncated(w: World) -> None:
    damaged_store(w, lambda path: path.write_bytes(path.read_bytes()[:1024]))
