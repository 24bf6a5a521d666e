"""A status file rewritten while others read it (the trainer's status.json under a poller): a
reader gets one whole version, never a false checksum error, and generations never repeat even
when two writes share a timestamp tick."""

import threading

from comfy_lora_cloud.storage import LocalStorage


def test_readers_never_see_a_false_checksum_error_during_rewrites(tmp_path):
    store = LocalStorage(tmp_path)
    versions = [f'{{"step": {i:06d}}}'.encode() for i in range(400)]  # all the same size
    store.write_bytes("runs/r/status.json", versions[0])
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        for v in versions[1:]:
            store.write_bytes("runs/r/status.json", v)
        done.set()

    def reader():
        try:
            while not done.is_set():
                assert store.read_bytes("runs/r/status.json") in versions
                dest = tmp_path / "copy" / f"{threading.get_ident()}.json"
                store.download_file("runs/r/status.json", dest)
                assert dest.read_bytes() in versions
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert store.read_bytes("runs/r/status.json") == versions[-1]


def test_generations_are_unique_and_increasing(tmp_path):
    store = LocalStorage(tmp_path)
    gens = [store.write_bytes("a.txt", b"same size!").generation for _ in range(50)]
    assert gens == sorted(gens) and len(set(gens)) == 50
    assert store.stat("a.txt").generation == gens[-1]


def test_a_reader_never_overwrites_the_generation_a_writer_just_committed(tmp_path):
    """A reader that saw a rewritten file before its writer wrote the sidecar must not replace the
    writer's generation with one of its own: the writer's next precondition write (a lock's renew)
    would then fail against itself. Found as a flaky two-process lock test under load."""
    import os

    from comfy_lora_cloud.storage.base import checksum_bytes
    from comfy_lora_cloud.storage.local import LocalStorage

    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("k.json", b"v1")
    final = storage._path("k.json")
    # the writer's commit, half done: its file is in place, its sidecar not yet written
    tmp = final.with_name("k.json.tmp")
    tmp.write_bytes(b"v2 longer")
    os.replace(tmp, final)
    st = final.stat()
    writers_generation = st.st_mtime_ns + 12345

    def hash_while_the_writer_finishes():
        storage._write_meta("k.json", st, checksum_bytes(b"v2 longer"), writers_generation)
        return checksum_bytes(b"v2 longer")

    info = storage._info_for("k.json", st, hash_while_the_writer_finishes)
    assert info.generation == writers_generation
    assert storage.stat("k.json").generation == writers_generation
    storage.write_bytes("k.json", b"v3", if_generation_match=writers_generation)  # the writer's next write
