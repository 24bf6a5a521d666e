"""Listings cost O(pages), not O(items): datasets, LoRAs and runs come from one paged
listing of their prefix; only the page shown has its details read, one request each, in
parallel, remembered by generation. Counted in HTTP requests the real GCS client sends to the
emulator (through a recording transport), so "how many requests" is a fact, not a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.models import Run, RunState, RunStatus
from comfy_lora_cloud.service import library
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.library.listings import RECORDS, Page, RecordCache, read_records
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import layout
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.gcs_errors import make_retry
from tests.contract.gcs_transports import GcsSemantics, session_with

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gcs(gcs_env, gcs_bucket):
    transport = GcsSemantics(gcs_env.url)
    storage = GcsStorage(gcs_bucket, "lc", client=gcs_env.client(session_with(transport)),
                         retry=make_retry(initial=0.01, timeout=10))
    return storage, transport


def requests_since(transport, mark: int) -> dict[str, int]:
    """The requests sent after ``mark``: listings and media reads, by kind."""
    out = {"list": 0, "read": 0, "other": 0}
    for sent in transport.history[mark:]:
        if sent.method == "GET" and sent.path.endswith("/o"):
            out["list"] += 1
        elif sent.method == "GET" and sent.query.get("alt") == "media":
            out["read"] += 1
        else:
            out["other"] += 1
    return out


def seed_datasets(storage, n: int) -> None:
    for i in range(n):
        prefix = layout.dataset_prefix(f"ds{i:03}")
        storage.write_bytes(prefix + "001.png", b"png")
        storage.write_bytes(prefix + "001.txt", b"a caption")
        storage.write_bytes(prefix + "002.png", b"png")
        storage.write_bytes(prefix + layout.MANIFEST, json.dumps({"trigger": f"t{i}"}).encode())


def test_a_page_of_datasets_costs_one_listing_and_its_manifests(gcs):
    storage, transport = gcs
    seed_datasets(storage, 12)
    mark = len(transport.history)
    found = library.list_datasets(storage, Page(offset=4, limit=5))
    assert [d.name for d in found] == [f"ds{i:03}" for i in range(4, 9)]
    assert found.total == 12 and found.problems == []
    assert [(d.images, d.captioned, d.trigger, d.complete) for d in found][0] == (2, 1, "t4", True)
    # one listing, one read per manifest shown, no stat
    assert requests_since(transport, mark) == {"list": 1, "read": 5, "other": 0}

    mark = len(transport.history)
    assert [d.trigger for d in library.list_datasets(storage, Page(offset=4, limit=5))] == [f"t{i}" for i in range(4, 9)]
    assert requests_since(transport, mark) == {"list": 1, "read": 0, "other": 0}  # remembered by generation

    storage.write_bytes(layout.dataset_prefix("ds005") + layout.MANIFEST, json.dumps({"trigger": "new"}).encode())
    mark = len(transport.history)
    again = library.list_datasets(storage, Page(offset=4, limit=5))
    assert again[1].trigger == "new"  # a new generation is read again, and only it
    assert requests_since(transport, mark) == {"list": 1, "read": 1, "other": 0}


def test_a_page_keeps_problems_and_the_complete_flag(gcs):
    storage, _ = gcs
    seed_datasets(storage, 3)
    storage.write_bytes(layout.dataset_prefix("ds001") + layout.MANIFEST, b"{not json")
    storage.delete(layout.dataset_prefix("ds002") + layout.MANIFEST)
    storage.write_bytes("datasets/bad name!/x.png", b"png")
    found = library.list_datasets(storage, Page(limit=10))
    assert [(d.name, d.complete) for d in found] == [("ds000", True), ("ds001", False), ("ds002", False)]
    entries = {p.entry for p in found.problems}
    assert "datasets/ds001/dataset.json" in entries and "datasets/bad name!/" in entries
    # a corrupt record is remembered as corrupt for its generation: reported again, not re-read
    assert "datasets/ds001/dataset.json" in {p.entry for p in library.list_datasets(storage, Page(limit=10)).problems}


def test_loras_page_reads_only_the_sidecars_shown(gcs):
    storage, transport = gcs
    for i in range(6):
        storage.write_bytes(layout.lora_key(f"l{i}"), b"weights")
        storage.write_bytes(layout.lora_meta_key(f"l{i}"), json.dumps({"dataset": f"d{i}"}).encode())
    storage.write_bytes(layout.lora_meta_key("l5"), b"[1, 2]")  # not an object
    mark = len(transport.history)
    found = library.list_loras(storage, Page(offset=3, limit=3))
    assert [(lora.name, lora.metadata) for lora in found] == [("l3", {"dataset": "d3"}), ("l4", {"dataset": "d4"}),
                                                               ("l5", {})]
    assert found.total == 6 and [p.entry for p in found.problems] == ["loras/l5.json"]
    assert requests_since(transport, mark) == {"list": 1, "read": 3, "other": 0}


def status_bytes(run_id: str, updated_at: float, state: RunState = RunState.DONE) -> bytes:
    return json.dumps(RunStatus(run_id=run_id, state=state, step=1, total_steps=2, updated_at=updated_at).to_dict()).encode()


async def test_runs_page_newest_first_reads_only_its_statuses(gcs, tmp_path, clean_env):
    storage, transport = gcs
    app = App(Settings.load(clean_env), storage=storage)
    # bucket-only runs: ordered by the launch time in their ids, newest first
    for i in range(8):
        run_id = f"cat-2026010{i + 1}-120000-abcd"
        storage.write_bytes(layout.run_key(run_id, "status.json"), status_bytes(run_id, 1_000 + i))
        storage.write_bytes(layout.run_key(run_id, "samples/s.png"), b"png")
    storage.write_bytes(layout.run_key("broken-20260109-120000-abcd", "status.json"), b"{oops")
    app.state.put_run(Run(id="mine", dataset="d", preset="style", lora_name="x", state=RunState.TRAINING,
                          created_at=4_000_000_000))
    mark = len(transport.history)
    listing = await app.runs.listing(limit=3, offset=0)
    # the corrupt status takes its place in the page but is left out, and reported
    assert [r.id for r in listing.runs] == ["mine", "cat-20260108-120000-abcd"]
    assert [p.entry for p in listing.problems] == ["runs/broken-20260109-120000-abcd/status.json"]
    assert (listing.total, listing.offset, listing.limit) == (10, 0, 3)
    # two paged listings (the folders, their status.json) and the page's statuses
    assert requests_since(transport, mark) == {"list": 2, "read": 2, "other": 0}
    assert listing.runs[1].state is RunState.DONE

    second = await app.runs.listing(limit=3, offset=3)
    assert [r.id for r in second.runs] == [f"cat-2026010{i}-120000-abcd" for i in (7, 6, 5)]

    statuses = await app.runs.status_listing()
    assert len(statuses.statuses) == 8
    assert [p.entry for p in statuses.problems] == ["runs/broken-20260109-120000-abcd/"]

    # `train status` with no run: the same order, a page at a time, reading only the page's statuses
    app.state.put_run(Run(id="cat-20260105-120000-abcd", dataset="d", preset="style", lora_name="x",
                          state=RunState.DONE, created_at=1))  # (its record does not move it here)
    storage.write_bytes("runs/bad name!/status.json", status_bytes("x", 1))
    RECORDS.clear()  # cold: nothing remembered from the listings above
    mark = len(transport.history)
    page = await app.runs.status_listing(offset=0, limit=3)  # broken (09), 08, 07: the corrupt one reported
    assert [st.run_id for st in page.statuses] == [f"cat-2026010{i}-120000-abcd" for i in (8, 7)]
    assert [p.entry for p in page.problems] == ["runs/bad name!/", "runs/broken-20260109-120000-abcd/"]
    assert requests_since(transport, mark) == {"list": 1, "read": 3, "other": 0}
    page = await app.runs.status_listing(offset=3, limit=3)
    assert [st.run_id for st in page.statuses] == [f"cat-2026010{i}-120000-abcd" for i in (6, 5, 4)]
    assert (page.total, page.offset, page.limit) == (9, 3, 3)


def test_read_records_remembers_by_generation_and_not_failures_to_reach(tmp_path):
    from comfy_lora_cloud.errors import StorageError
    from comfy_lora_cloud.storage import LocalStorage

    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("r/a.json", b"1")
    storage.write_bytes("r/b.json", b"2")
    infos = storage.list("r/").objects
    cache = RecordCache()
    calls = []

    def parse(data: bytes, key: str) -> int:
        calls.append(key)
        if key == "r/b.json" and calls.count(key) == 1:  # b's first read fails, whatever the order
            raise StorageError("the bucket is out of reach")
        return int(data)

    first = read_records(storage, infos, parse, kind="n", cache=cache)
    assert [r.value for r in first] == [1, None] and isinstance(first[1].error, StorageError)
    second = read_records(storage, infos, parse, kind="n", cache=cache)
    assert [r.value for r in second] == [1, 2]  # the failure was not remembered; the success was
    assert sorted(calls) == ["r/a.json", "r/b.json", "r/b.json"]  # read in parallel: in any order


def test_page_is_checked():
    from comfy_lora_cloud.errors import ConfigError

    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 1001}, {"offset": True}):
        with pytest.raises(ConfigError):
            Page(**bad)
    assert Page(2, 2).of([0, 1, 2, 3, 4]) == [2, 3]


async def test_routes_and_cli_page_through_datasets(aiohttp_client, tmp_path, clean_env):
    from aiohttp import web

    from comfy_lora_cloud.comfy.routes import PREFIX, register_routes
    from comfy_lora_cloud.storage import LocalStorage

    bucket = tmp_path / "bucket"
    storage = LocalStorage(bucket)
    seed_datasets(storage, 5)
    app = App(Settings.load(clean_env), storage=storage)
    routes = web.RouteTableDef()
    register_routes(routes, lambda: app)
    web_app = web.Application()
    web_app.add_routes(routes)
    client = await aiohttp_client(web_app)
    body = await (await client.get(f"{PREFIX}/datasets?limit=2&offset=2")).json()
    assert [d["name"] for d in body["datasets"]] == ["ds002", "ds003"]
    assert (body["total"], body["offset"], body["limit"]) == (5, 2, 2)
    assert (await client.get(f"{PREFIX}/datasets?limit=5000")).status == 400
    loras = await (await client.get(f"{PREFIX}/loras")).json()
    assert loras["total"] == 0 and loras["limit"] == 100

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_CLOUD_HOME": str(clean_env),
           "LORA_CLOUD_STORAGE": str(bucket)}
    out = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.cli.main", "--json", "dataset", "list",
                          "--limit", "2", "--offset", "1"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert [d["name"] for d in json.loads(out.stdout)] == ["ds001", "ds002"]
    assert "showing 2-3 of 5 datasets; next page: --offset 3" in out.stderr
    out = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.cli.main", "--json", "dataset", "list", "--all"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert len(json.loads(out.stdout)) == 5 and "showing" not in out.stderr
