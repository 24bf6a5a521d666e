"""GcsStorage behaviour the emulator cannot show by itself.

The real client talks to the emulator through an injected HTTP transport
(:mod:`tests.contract.gcs_transports`) that records every request and can answer some itself:
that is how pagination, preconditions, 403/412/503 answers, dropped connections and corrupted
bytes are tested.
"""

from __future__ import annotations

import json
import os

import pytest
import requests

from comfy_lora_cloud.errors import (
    BucketNotFound,
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage, sync
from comfy_lora_cloud.storage.base import checksum_bytes
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.gcs_client import make_client
from comfy_lora_cloud.storage.gcs_errors import make_retry
from tests.contract.gcs_transports import InterceptingAdapter, Reply, Sent, session_with

FAST_RETRY = dict(initial=0.001, maximum=0.01, timeout=10)


def object_calls(adapter: InterceptingAdapter) -> list[Sent]:
    """Requests about objects; the client also fetches bucket metadata in the background
    (for its telemetry cache), which is not ours to count."""
    return [h for h in adapter.history if "/o" in h.path.split("/b/", 1)[-1]]


def gcs(emu, bucket, adapter=None, **kw) -> GcsStorage:
    client = emu.client(session_with(adapter) if adapter else None)
    return GcsStorage(bucket, "pre", client=client, retry=make_retry(**FAST_RETRY), **kw)


def test_from_url_uses_emulator_and_prefixes_keys(gcs_env, gcs_bucket):
    s = open_storage(f"gs://{gcs_bucket}/team/lora")
    assert isinstance(s, GcsStorage) and s.url == f"gs://{gcs_bucket}/team/lora"
    s.write_bytes("datasets/a.txt", b"x")
    raw = [b.name for b in gcs_env.client().list_blobs(gcs_bucket)]
    assert raw == ["team/lora/datasets/a.txt"]
    assert [o.key for o in s.list().objects] == ["datasets/a.txt"]
    assert s.list("", delimiter="/").prefixes == ["datasets/"]


def test_missing_bucket_is_named(gcs_env, tmp_path):
    s = GcsStorage.from_url("gs://no-such-bucket-lc/x", retry=make_retry(**FAST_RETRY))
    (tmp_path / "f").write_bytes(b"1")
    for call in (lambda: s.stat("a"), lambda: s.list(), lambda: s.write_bytes("a", b"1"),
                 lambda: s.upload_file(tmp_path / "f", "a"), lambda: s.read_bytes("a"),
                 lambda: s.download_file("a", tmp_path / "out")):
        with pytest.raises(BucketNotFound, match="'no-such-bucket-lc' does not exist"):
            call()
    assert not (tmp_path / "out").exists()


def _item(name: str, data: bytes, gen: int = 1) -> dict:
    import base64

    c = checksum_bytes(data)
    return {"name": name, "size": str(len(data)), "md5Hash": base64.b64encode(bytes.fromhex(c.md5)).decode(),
            "crc32c": c.crc32c, "generation": str(gen), "updated": "2026-01-01T00:00:00.000Z"}


def test_list_requests_and_follows_every_page(gcs_env):
    """The emulator returns one page whatever we ask, so a scripted server answers in two pages."""

    def pages(sent: Sent) -> Reply | None:
        if sent.method == "GET" and sent.path.endswith("/b/bkt/o"):
            if "pageToken" not in sent.query:
                body = {"items": [_item("pre/d/1", b"a"), _item("pre/d/2", b"b")], "prefixes": ["pre/d/sub/"],
                        "nextPageToken": "tok-2"}
            else:
                body = {"items": [_item("pre/d/3", b"c")], "prefixes": ["pre/d/sub2/"]}
            return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        return Reply(500)

    adapter = InterceptingAdapter(pages)
    s = gcs(gcs_env, "bkt", adapter, page_size=2)
    listing = s.list("d/", delimiter="/")
    assert [o.key for o in listing.objects] == ["d/1", "d/2", "d/3"]
    assert listing.prefixes == ["d/sub/", "d/sub2/"]
    calls = object_calls(adapter)
    assert [h.query.get("pageToken") for h in calls] == [None, "tok-2"]
    assert all(h.query["maxResults"] == "2" and h.query["prefix"] == "pre/d/" and h.query["delimiter"] == "/"
               for h in calls)


def test_preconditions_are_sent_on_every_write(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()  # records, forwards to the emulator
    s = gcs(gcs_env, gcs_bucket, adapter, chunk_size=4 * 1024 * 1024)
    s.write_bytes("a", b"1", if_generation_match=0)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    s.upload_file(big, "big", if_generation_match=0)
    g = s.stat("a").generation
    s.delete("a", if_generation_match=g)
    writes = [h for h in adapter.history if h.method in ("POST", "DELETE")]
    assert [(h.method, h.query.get("uploadType"), h.query.get("ifGenerationMatch")) for h in writes] == [
        ("POST", "multipart", "0"), ("POST", "resumable", "0"), ("DELETE", None, str(g)),
    ]
    # and without a precondition none is sent
    adapter.history.clear()
    s.write_bytes("b", b"2")
    assert "ifGenerationMatch" not in object_calls(adapter)[0].query


def test_412_maps_to_precondition_failed_without_retry(gcs_env, gcs_bucket, tmp_path):
    def refuse(sent: Sent) -> Reply | None:
        if "ifGenerationMatch" in sent.query:
            return Reply(412, b'{"error": {"code": 412}}', {"Content-Type": "application/json"})
        return None

    adapter = InterceptingAdapter(refuse)
    s = gcs(gcs_env, gcs_bucket, adapter)
    (tmp_path / "f").write_bytes(b"data")
    for call in (lambda: s.write_bytes("k", b"x", if_generation_match=7),
                 lambda: s.upload_file(tmp_path / "f", "k", if_generation_match=7),
                 lambda: s.delete("k", if_generation_match=7)):
        adapter.history.clear()
        with pytest.raises(PreconditionFailed, match="another writer"):
            call()
        assert len(object_calls(adapter)) == 1


def test_forbidden_says_credentials_and_leaks_nothing(gcs_env):
    body = b'{"error": {"code": 403, "message": "Bearer ya29.SECRET-TOKEN-abcdef denied"}}'
    s = gcs(gcs_env, "bkt", InterceptingAdapter(lambda sent: Reply(403, body, {"Content-Type": "application/json"})))
    for call in (lambda: s.stat("a"), lambda: s.list(), lambda: s.write_bytes("a", b"1"), lambda: s.read_bytes("a")):
        with pytest.raises(StorageError) as info:
            call()
        assert "credentials are missing, expired or lack permission" in str(info.value)
        assert "SECRET" not in str(info.value) and "ya29" not in str(info.value)


def test_503_and_connection_resets_are_retried(gcs_env, gcs_bucket):
    failures = {"GET": 2, "POST": 1}

    def flaky(sent: Sent) -> Reply | None:
        if "/o" in sent.path.split("/b/", 1)[-1] and failures.get(sent.method, 0) > 0:
            failures[sent.method] -= 1
            if sent.method == "POST":
                raise requests.ConnectionError("connection reset by peer")
            return Reply(503, b"busy")
        return None

    adapter = InterceptingAdapter(flaky)
    s = gcs(gcs_env, gcs_bucket, adapter)
    s.write_bytes("k", b"payload")
    assert s.read_bytes("k") == b"payload"
    assert [h.method for h in object_calls(adapter)] == ["POST", "POST", "GET", "GET", "GET"]


def test_errors_that_are_not_transient_are_not_retried(gcs_env, gcs_bucket):
    bad_request = Reply(400, b'{"error": {"code": 400}}', {"Content-Type": "application/json"})
    adapter = InterceptingAdapter(lambda sent: bad_request)
    s = gcs(gcs_env, gcs_bucket, adapter)
    with pytest.raises(StorageError, match="HTTP 400"):
        s.write_bytes("k", b"1")
    assert len(object_calls(adapter)) == 1


def test_large_upload_is_resumable_in_chunks(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()
    s = gcs(gcs_env, gcs_bucket, adapter, chunk_size=2 * 1024 * 1024)
    data = os.urandom(9 * 1024 * 1024 + 17)  # above the client's 8 MiB multipart limit
    (tmp_path / "w").write_bytes(data)
    s.upload_file(tmp_path / "w", "loras/w.safetensors")
    kinds = [(h.method, h.query.get("uploadType")) for h in object_calls(adapter)]
    assert kinds[0] == ("POST", "resumable")
    assert [m for m, _ in kinds[1:]] == ["PUT"] * 5
    assert s.read_bytes("loras/w.safetensors") == data


def test_upload_reported_corrupt_is_deleted(gcs_env, gcs_bucket, tmp_path):
    def lie(sent: Sent, reply: Reply) -> Reply:
        if sent.method == "POST" and reply.status == 200:
            meta = json.loads(reply.body)
            meta["md5Hash"] = "AAAAAAAAAAAAAAAAAAAAAA=="
            return Reply(200, json.dumps(meta).encode(), reply.headers)
        return reply

    s = gcs(gcs_env, gcs_bucket, InterceptingAdapter(after=lie))
    with pytest.raises(ChecksumMismatch, match="deleted"):
        s.write_bytes("k", b"bytes")
    assert [b.name for b in gcs_env.client().list_blobs(gcs_bucket)] == []


def test_download_without_hash_header_is_checked_against_metadata(gcs_env, gcs_bucket, tmp_path):
    flip = {"on": False}

    def strip(sent: Sent, reply: Reply) -> Reply:
        if sent.query.get("alt") == "media":
            headers = {k: v for k, v in reply.headers.items() if k.lower() != "x-goog-hash"}
            body = reply.body
            if flip["on"]:
                body = bytes([body[0] ^ 1]) + body[1:]
            return Reply(reply.status, body, headers)
        return reply

    adapter = InterceptingAdapter(after=strip)
    s = gcs(gcs_env, gcs_bucket, adapter)
    s.write_bytes("k", b"good bytes")
    assert s.read_bytes("k") == b"good bytes"
    flip["on"] = True
    with pytest.raises(ChecksumMismatch, match="corrupt"):
        s.read_bytes("k")
    with pytest.raises(ChecksumMismatch):
        s.download_file("k", tmp_path / "k")
    assert list(tmp_path.iterdir()) == []


def test_pull_refuses_keys_that_escape_the_folder(gcs_env, gcs_bucket, tmp_path):
    """GCS allows object names such as ``d/../../evil.txt`` (the emulator chokes on them, so the
    listing is scripted); pull must never write outside its folder."""
    gcs_env.client().bucket(gcs_bucket).blob("pre/d/ok.txt").upload_from_string(b"ok")

    def listing(sent: Sent) -> Reply | None:
        if sent.method == "GET" and sent.path.endswith("/o"):
            items = [_item("pre/d/ok.txt", b"ok"), _item("pre/d/../../evil.txt", b"evil"), _item("pre/d/sub/", b"")]
            return Reply(200, json.dumps({"items": items}).encode(), {"Content-Type": "application/json"})
        return None

    s = gcs(gcs_env, gcs_bucket, InterceptingAdapter(listing))
    dst = tmp_path / "a" / "b" / "dst"
    plan = sync.plan_pull(s, "d/", dst)
    assert plan.rejected == ["../../evil.txt"] and [t.rel for t in plan.downloads] == ["ok.txt"]
    sync.apply(plan, s)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == ["a/b/dst/ok.txt"]


def test_service_account_json_builds_signed_credentials(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "proj-1", "private_key_id": "k1", "private_key": pem,
            "client_email": "lc@proj-1.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"}
    settings = Settings.load(tmp_path, gcs_service_account_json=json.dumps(info))
    client = make_client(settings)
    assert isinstance(client._credentials, service_account.Credentials)
    assert client.project == "proj-1"
    bad = Settings.load(tmp_path, gcs_service_account_json='{"private_key": "-----BEGIN PRIVATE KEY-----abc"}')
    with pytest.raises(ConfigError) as err:
        make_client(bad)
    assert "abc" not in str(err.value) and "BEGIN" not in str(err.value)


def test_bad_urls_and_chunk_sizes_are_config_errors():
    with pytest.raises(ConfigError):
        GcsStorage.from_url("gs:///x", client=object())
    with pytest.raises(ConfigError):
        GcsStorage.from_url("gs://b/../x", client=object())
    with pytest.raises(ConfigError):
        GcsStorage("b", client=object(), chunk_size=1000)


def test_missing_object_in_existing_bucket(gcs_env, gcs_bucket):
    s = gcs(gcs_env, gcs_bucket)
    with pytest.raises(ObjectNotFound, match=f"gs://{gcs_bucket}/pre"):
        s.read_bytes("nope")


def test_bytes_corrupted_at_rest_are_detected(gcs_emulator, tmp_path, monkeypatch):
    """A disk-mode emulator keeps each object as a plain file: flip a byte in it, as bit rot
    would, and every read must fail rather than hand back the bad bytes."""
    from tests.fixtures.gcs_emulator import start_emulator, stop_emulator

    emu = start_emulator(tmp_path / "emu-data")
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.url)
        bucket = emu.new_bucket()
        s = GcsStorage(bucket, "pre", client=emu.client(), retry=make_retry(**FAST_RETRY))
        s.write_bytes("loras/x.safetensors", b"good weights" * 1000)
        stored = tmp_path / "emu-data" / ".cloudstorage" / bucket / "pre" / "loras" / "x.safetensors"
        data = bytearray(stored.read_bytes())
        data[100] ^= 0x01
        stored.write_bytes(bytes(data))
        with pytest.raises(ChecksumMismatch):
            s.read_bytes("loras/x.safetensors")
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(ChecksumMismatch):
            sync.pull(s, "loras/", out)
        assert list(out.iterdir()) == []
    finally:
        stop_emulator(emu)


def test_resumable_upload_survives_a_dropped_chunk(gcs_env, gcs_bucket, tmp_path):
    dropped = {"done": False}

    def drop_second_chunk(sent: Sent) -> Reply | None:
        puts = [h for h in adapter.history if h.method == "PUT"]
        if sent.method == "PUT" and len(puts) == 2 and not dropped["done"]:
            dropped["done"] = True
            raise requests.ConnectionError("connection reset by peer")
        return None

    adapter = InterceptingAdapter(drop_second_chunk)
    s = gcs(gcs_env, gcs_bucket, adapter, chunk_size=2 * 1024 * 1024)
    data = os.urandom(9 * 1024 * 1024)
    (tmp_path / "w").write_bytes(data)
    info = s.upload_file(tmp_path / "w", "w.bin")
    assert dropped["done"] and info.size == len(data)
    assert s.read_bytes("w.bin") == data


def test_retry_policy_covers_throttling_server_errors_and_resets():
    from google.api_core import exceptions as api

    from comfy_lora_cloud.storage.gcs_errors import is_retriable

    for exc in (api.TooManyRequests("slow down"), api.ServiceUnavailable("x"), api.InternalServerError("x"),
                api.BadGateway("x"), api.GatewayTimeout("x"), requests.ConnectionError("reset"),
                ConnectionResetError(104, "reset"), requests.exceptions.ChunkedEncodingError("cut")):
        assert is_retriable(exc), exc
    for exc in (api.NotFound("x"), api.Forbidden("x"), api.PreconditionFailed("x"), api.BadRequest("x"),
                ValueError("x")):
        assert not is_retriable(exc), exc
