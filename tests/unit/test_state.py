import multiprocessing
import sqlite3

from comfy_lora_cloud.models import Cost, Instance, InstanceState, Run, RunState
from comfy_lora_cloud.service.home.state import SCHEMA_VERSION, StateStore


def test_schema_is_versioned_and_wal(tmp_path):
    st = StateStore(tmp_path / "state.db")
    assert st.schema_version == SCHEMA_VERSION
    with st.connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    StateStore(tmp_path / "state.db")  # reopening migrates nothing twice
    assert st.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    try:
        StateStore(path)
    except Exception as exc:
        assert "newer" in str(exc)
    else:
        raise AssertionError("a newer schema must be refused")


def test_runs_instances_and_ledger_round_trip(tmp_path):
    st = StateStore(tmp_path / "s.db")
    run = st.put_run(Run(id="r1", dataset="cat", preset="character", lora_name="cat", config_hash="h1",
                         spec={"steps": 10}))
    assert st.get_run("r1").spec == {"steps": 10}
    st.update_run("r1", state=RunState.TRAINING, instance_id="42")
    assert st.find_run_by_hash("h1").state is RunState.TRAINING
    assert [r.id for r in st.list_runs(live_only=True)] == ["r1"]
    st.update_run("r1", state=RunState.DONE)
    assert st.list_runs(live_only=True) == []
    st.put_instance(Instance(id=42, label="lora-cloud:r1", state=InstanceState.RUNNING, dph_total=0.5), run_id="r1")
    assert st.list_instances()[0]["run_id"] == "r1"
    st.mark_instance_destroyed("vast", "42")
    assert st.list_instances() == [] and len(st.list_instances(include_destroyed=True)) == 1
    st.add_cost(Cost("42", "r1", "gpu", 0.25, 100.0, 1900.0))
    assert [c.usd for c in st.costs(run_id="r1")] == [0.25]


def _writer(path: str, n: int, tag: str) -> None:
    st = StateStore(path)
    for i in range(n):
        st.add_cost(Cost(f"{tag}{i}", None, "gpu", 0.01, float(i), float(i + 1)))


def test_two_processes_write_at_the_same_moment(tmp_path):
    path = str(tmp_path / "s.db")
    StateStore(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 50, t)) for t in "ab"]
    for p in procs:
        p.start()
    _writer(path, 50, "c")
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(StateStore(path).costs()) == 150


def test_a_damaged_store_opens_and_every_call_says_corrupt(tmp_path):
    import pytest

    from comfy_lora_cloud.errors import CorruptRecord

    path = tmp_path / "state.db"
    st = StateStore(path)
    st.put_run(Run(id="r1", dataset="d", preset="character", lora_name="l"))
    path.write_bytes(path.read_bytes()[:1024])  # truncated
    damaged = StateStore(path)  # opening does not raise: the guard must still run
    for call in (lambda: damaged.get_run("r1"), damaged.list_runs, lambda: damaged.set_kv("k", "v")):
        with pytest.raises(CorruptRecord, match="damaged") as info:
            call()
        assert "run_id" not in info.value.details  # the store, not one row


def test_a_bad_row_is_skipped_by_listings_and_named_by_a_get(tmp_path):
    import pytest

    from comfy_lora_cloud.errors import CorruptRecord

    st = StateStore(tmp_path / "s.db")
    for run_id in ("good", "odd", "specless", "wordy"):
        st.put_run(Run(id=run_id, dataset="d", preset="character", lora_name="l"))
    st.add_cost(Cost("1", "good", "gpu", 0.5, 0.0, 10.0))
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("UPDATE runs SET state = 'hibernating' WHERE id = 'odd'")
    conn.execute("UPDATE runs SET spec = '{oops' WHERE id = 'specless'")
    conn.execute("UPDATE runs SET dph = 'expensive' WHERE id = 'wordy'")
    conn.execute('INSERT INTO ledger (instance_id, run_id, kind, usd, start, "end") VALUES (?, ?, ?, ?, ?, ?)',
                 ("1", "good", "gpu", "lots", 0, 1))
    conn.execute("INSERT INTO kv (key, value) VALUES ('n', 'yesterday')")
    conn.commit()
    conn.close()
    skipped: list = []
    assert [r.id for r in st.list_runs(on_corrupt=skipped.append)] == ["good"]
    assert sorted(e.details["run_id"] for e in skipped) == ["odd", "specless", "wordy"]
    with pytest.raises(CorruptRecord, match="unknown state") as info:
        st.get_run("odd")
    assert info.value.details["run_id"] == "odd"
    bad: list = []
    assert [c.usd for c in st.costs(run_id="good", on_corrupt=bad.append)] == [0.5] and len(bad) == 1
    with pytest.raises(CorruptRecord, match="not a number"):
        st.get_kv_float("n")


def test_first_sightings_are_on_our_clock_and_kept(tmp_path):
    st = StateStore(tmp_path / "s.db")
    provider_start = 1_000.0  # the provider's clock: irrelevant to ages
    inst = Instance(id=7, label="lora-cloud:r", run_id="r", state=InstanceState.RUNNING, created_at=provider_start)
    assert st.record_sightings([inst], 5_000.0) == {"7": 5_000.0}
    assert st.record_sightings([inst], 9_000.0) == {"7": 5_000.0}  # the first sighting stays
    st.put_instance(Instance(id=8, run_id="r"), "r", seen_at=4_000.0)  # recorded at launch
    assert st.record_sightings([Instance(id=8, run_id="r")], 9_000.0) == {"8": 4_000.0}
