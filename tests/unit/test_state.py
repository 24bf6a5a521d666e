import multiprocessing
import sqlite3

from comfy_lora_cloud.models import Cost, Instance, InstanceState, Run, RunState
from comfy_lora_cloud.service.state import SCHEMA_VERSION, StateStore


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
