"""What a mirror with deletes may never do: delete over the whole bucket or a top-level folder
(refused in planning and again in apply, so no caller can skip the rule), or delete a local
file outside the folder it pulls into."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.storage import sync
from comfy_lora_cloud.storage.local import LocalStorage
from tests.contract.storage_contract import make_tree

DANGEROUS = ["", "datasets/", "datasets", "loras/", "runs/", "models/", "workflows/", "mine/"]


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    s = LocalStorage(tmp_path / "bucket")
    for key in ("datasets/cat/a.png", "datasets/dog/b.png", "loras/x.safetensors", "runs/r1/status.json"):
        s.write_bytes(key, b"precious")
    return s


def _keys(store) -> set[str]:
    return {o.key for o in store.list("").objects}


@pytest.mark.parametrize("prefix", DANGEROUS)
def test_push_with_delete_over_a_top_level_prefix_is_refused(store, tmp_path, prefix):
    src = tmp_path / "src"
    make_tree(src, {"only.png": b"1"})
    before = _keys(store)
    with pytest.raises(ConfigError, match="refusing to mirror with deletes"):
        sync.plan_push(store, src, prefix, delete=True)
    with pytest.raises(ConfigError):
        sync.push(store, src, prefix, delete=True)
    assert _keys(store) == before


@pytest.mark.parametrize("prefix", ["", "datasets/", "runs/"])
def test_pull_with_delete_from_a_top_level_prefix_is_refused(store, tmp_path, prefix):
    dst = tmp_path / "mine"
    make_tree(dst, {"holiday.jpg": b"mine", "notes/a.txt": b"mine too"})
    with pytest.raises(ConfigError, match="refusing"):
        sync.pull(store, prefix, dst, delete=True)
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == ["a.txt", "holiday.jpg"]


def test_a_hand_built_plan_cannot_skip_the_rule(store, tmp_path):
    """apply() checks the prefix of any plan that deletes, however the plan was made."""
    src = tmp_path / "src"
    make_tree(src, {"only.png": b"1"})
    plan = sync.plan_push(store, src, "datasets/")  # no delete: allowed
    plan.deletes = ["cat/a.png"]
    with pytest.raises(ConfigError):
        sync.apply(plan, store)
    assert store.exists("datasets/cat/a.png")
    assert not store.exists("datasets/only.png")  # refused before any transfer, too


def test_a_dataset_prefix_may_be_mirrored_with_delete(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {"new.png": b"2"})
    result = sync.push(store, src, "datasets/cat/", delete=True)
    assert result.deleted == 1 and _keys(store) >= {"datasets/cat/new.png", "datasets/dog/b.png"}
    assert not store.exists("datasets/cat/a.png")


def test_pull_never_deletes_through_a_folder_swapped_for_a_symlink(store, tmp_path):
    """Planned: delete dst/sub/old.txt. Before apply, dst/sub becomes a link to a folder outside:
    the delete is skipped instead of reaching outside dst."""
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    make_tree(dst, {"sub/old.txt": b"local only"})
    make_tree(outside, {"old.txt": b"not ours to delete"})
    plan = sync.plan_pull(store, "datasets/cat/", dst, delete=True)
    assert plan.deletes == ["sub/old.txt"]
    (dst / "sub" / "old.txt").unlink()
    (dst / "sub").rmdir()
    (dst / "sub").symlink_to(outside, target_is_directory=True)
    assert sync.apply(plan, store).deleted == 0
    assert (outside / "old.txt").read_bytes() == b"not ours to delete"
