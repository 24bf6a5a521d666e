"""The runs package answers with typed records; the routes send their ``to_dict()``. The sidebar
(web/*.js) reads the JSON's keys, so these pin them: which keys a run's view has in each of its
shapes (launched here or not, reported or not), the nulls, and that the run event carries the
same JSON as the route."""

from __future__ import annotations

import dataclasses
import json

import pytest

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.models import Run, RunState, RunStatus
from comfy_lora_cloud.service.events import RUN_EVENT
from comfy_lora_cloud.service.runs import ConfigCheck, RunHistory, RunPage, RunView, StopResult
from comfy_lora_cloud.storage import layout

from .conftest import NOW, token_headers

HEAD = ["id", "dataset", "preset", "lora_name", "gpu", "dph", "instance_id", "created_at", "error"]
PROGRESS = ["step", "total_steps", "loss", "eta_seconds", "sec_per_step", "message", "updated_at"]
DETAIL = ["samples", "problems", "attempts"]


def bucket_only(storage, run_id: str, **status) -> None:
    body = RunStatus(run_id=run_id, **{"state": RunState.TRAINING, "updated_at": NOW - 10, **status}).to_dict()
    storage.write_bytes(layout.run_key(run_id, "status.json"), json.dumps(body).encode())


async def test_a_runs_view_keeps_its_keys_in_each_shape(client, seeded):
    bucket_only(seeded.storage, "elsewhere-1", step=5, total_steps=10)
    seeded.state.put_run(Run(id="quiet-1", dataset="cats", preset="style", lora_name="q", state=RunState.LAUNCHING,
                             created_at=NOW - 60, updated_at=NOW - 50))
    seeded.storage.write_bytes(layout.run_key("nobody-1", "samples/x.png"), b"x")  # a folder, no status, no record

    page = await (await client.get(f"{PREFIX}/runs")).json()
    views = {v["id"]: v for v in page["runs"]}
    # launched here and reporting: the record's keys, then the trainer's progress
    assert list(views["run-1"]) == HEAD + ["state", "provider", "updated_at", "status"] + PROGRESS[:-1] + [
        "live", "cost_usd"]
    # launched elsewhere: no provider; the state comes with the progress
    assert list(views["elsewhere-1"]) == HEAD + ["status", "state"] + PROGRESS + ["live", "cost_usd"]
    assert views["elsewhere-1"]["dataset"] is None and views["elsewhere-1"]["loss"] is None
    # launched here, no report yet: no progress keys at all, a null status
    assert list(views["quiet-1"]) == HEAD + ["state", "provider", "updated_at", "status", "live", "cost_usd"]
    assert views["quiet-1"]["status"] is None and views["quiet-1"]["state"] == "launching"
    # neither: pending, with nulls where nothing is known
    assert list(views["nobody-1"]) == HEAD + ["status", "state", "live", "cost_usd"]
    assert (views["nobody-1"]["state"], views["nobody-1"]["live"], views["nobody-1"]["error"]) == ("pending", True, None)
    assert list(page) == ["runs", "problems", "total", "offset", "limit"]
    assert (page["total"], page["offset"], page["limit"]) == (4, 0, 50)

    # one run: the listing's view and its detail, the same JSON the service's record gives
    one = await (await client.get(f"{PREFIX}/runs/run-1")).json()
    assert list(one) == list(views["run-1"]) + DETAIL
    assert one["samples"] == ["s_0250.png"] and one["problems"] == []
    view = await seeded.app.runs.get("run-1")
    assert isinstance(view, RunView) and view.to_dict() == one
    assert isinstance(view.attempts, RunHistory) and view.state is RunState.TRAINING and view.step == 250


async def test_a_run_stopped_here_shows_the_stores_end_and_the_event_carries_the_routes_json(client, seeded):
    view = await seeded.app.runs.get("run-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.state = RunState.DONE  # type: ignore[misc]
    seeded.state.put_run(dataclasses.replace(seeded.state.get_run("run-1"), state=RunState.STOPPED,
                                             error="stopped by the user"))
    ended = await seeded.app.runs.get("run-1")
    assert (ended.state, ended.live, ended.error, ended.status.state) == (
        RunState.STOPPED, False, "stopped by the user", RunState.TRAINING)

    seeded.app.emit(RUN_EVENT, ended.to_dict())
    [(name, data)] = seeded.events[-1:]
    assert name == RUN_EVENT and data == await (await client.get(f"{PREFIX}/runs/run-1")).json()


async def test_the_other_run_answers_are_their_records_json(client, seeded):
    page = await seeded.app.runs.listing(limit=1, offset=0)
    assert isinstance(page, RunPage) and page.to_dict() == await (
        await client.get(f"{PREFIX}/runs?limit=1")).json()
    events = await seeded.app.runs.events("run-1", since=1)
    assert events.next == 3 and [e["kind"] for e in events.events] == ["state", "sample"]
    assert events.to_dict() == await (await client.get(f"{PREFIX}/runs/run-1/events?since=1")).json()
    samples = await seeded.app.runs.sample_listing("run-1")
    assert samples.samples == ("s_0250.png",)
    assert samples.to_dict() == await (await client.get(f"{PREFIX}/runs/run-1/samples")).json()

    headers = await token_headers(client)
    check = await seeded.app.train_config.check({"lora_type": "style", "config": {"rank": 0}})
    assert isinstance(check, ConfigCheck) and not check.ok and [e.field for e in check.errors] == ["rank"]
    answer = await (await client.post(f"{PREFIX}/train/check", headers=headers,
                                      json={"lora_type": "style", "config": {"rank": 0}})).json()
    assert answer == check.to_dict() and "values" not in answer and "plan" not in answer
    good = await (await client.post(f"{PREFIX}/train/check", headers=headers,
                                    json={"lora_type": "style", "config": {"rank": 16}})).json()
    assert good["ok"] and good["values"]["rank"] == 16 and list(good)[-3:] == ["values", "plan", "estimate"]
    presets = await seeded.app.train_config.presets()
    assert presets.to_dict() == await (await client.get(f"{PREFIX}/train/presets")).json()
    assert [p.name for p in presets.presets] == ["character", "style", "concept"]


def test_a_stop_result_says_what_was_destroyed_in_the_json_of_before():
    stopped = StopResult("r1", RunState.STOPPED, ("7", "8"))
    assert stopped.destroyed and stopped.to_dict() == {
        "id": "r1", "run_id": "r1", "state": "stopped", "destroyed_instances": ["7", "8"], "destroyed": True}
    assert StopResult("r1", RunState.STOPPED, ()).to_dict()["destroyed"] is False
