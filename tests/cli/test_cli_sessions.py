"""`lora-cloud comfy status --all` over a state store holding a damaged session record: it is
listed as damaged (exit 0), never "a bug" (it used to exit 1 on ``max_hours`` as text)."""

from __future__ import annotations

from comfy_lora_cloud.models import Session, SessionState
from comfy_lora_cloud.service.home.state import StateStore


def test_status_all_lists_a_damaged_session(cli, clean_env):
    state = StateStore(clean_env / "state.db")
    good = Session(id="session-good", state=SessionState.STOPPED, created_at=1000.0, updated_at=1000.0)
    state.put_session(good.to_dict())
    bad = {**Session(id="session-bad", state=SessionState.READY).to_dict(), "max_hours": "four", "created_at": None}
    state.put_session(bad)  # written behind the service's back (a bug, a hand edit)

    proc = cli("comfy", "status", "--all")
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr
    assert "session-good  stopped" in proc.stdout
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("session-bad")]
    assert "max_hours is 'four'" in line and "created_at is None" in line
    views = {v["id"]: v for v in cli.json("comfy", "status", "--all")}
    assert "max_hours is 'four'" in views["session-bad"]["damaged"] and "damaged" not in views["session-good"]
