"""Secret hygiene: redact() covers a service-account key however it is written,
files with secrets or cost records are 0600, typed settings are parsed strictly."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import quote, quote_plus, urlencode

import pytest

from comfy_lora_cloud.errors import ConfigError, redact
from comfy_lora_cloud.models import Cost
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings, set_value

SA = {
    "type": "service_account", "project_id": "lc-proj-123456",
    "private_key_id": "5f3c0a9e8d7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
    "client_email": "lora-trainer@lc-proj-123456.iam.gserviceaccount.com", "client_id": "109876543210987654321",
    "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": "https://oauth2.googleapis.com/token",
    "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/lora-trainer%40lc-proj-123456.iam.gserviceaccount.com",
}
SECRET_VALUES = [SA[k] for k in ("project_id", "private_key_id", "client_email", "client_id", "client_x509_cert_url")]


def _leaks(text: str) -> list[str]:
    return [v for v in SECRET_VALUES + ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]
            if v in text or quote(v, safe="") in text or quote_plus(v) in text]


@pytest.mark.parametrize("render", [
    lambda sa: json.dumps(sa),
    lambda sa: json.dumps(sa, indent=2, sort_keys=True),
    lambda sa: json.dumps(sa, separators=(",", ":")),
    lambda sa: urlencode({"creds": json.dumps(sa)}),
    lambda sa: quote(json.dumps(sa)),
    lambda sa: " ".join(f"{k}={v}" for k, v in sa.items()),
    lambda sa: "&".join(f"{k}={quote_plus(v)}" for k, v in sa.items()),
    lambda sa: repr(sa),
])
def test_a_registered_service_account_is_masked_however_it_is_written(clean_env, render):
    set_value(clean_env, "gcs_service_account_json", json.dumps(SA))
    Settings.load()  # registers the secrets
    text = redact(f"upload failed with {render(SA)} attached")
    assert _leaks(text) == [], text
    # the fields every key shares are not secrets: masking them would garble ordinary messages
    assert redact("type service_account via https://oauth2.googleapis.com/token") == \
        "type service_account via https://oauth2.googleapis.com/token"


def test_unregistered_key_material_is_masked_by_its_shape():
    text = json.dumps({**SA, "project_id": "p"}, indent=1)  # never registered in this process
    out = redact(text)
    for value in (SA["private_key_id"], SA["client_email"], SA["client_id"], "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"):
        assert value not in out
    out = redact("key=-----BEGIN%20PRIVATE%20KEY-----%0AMIIEabc%0A-----END%20PRIVATE%20KEY-----&api%5Fkey%3Dabcdefgh12345")
    assert "MIIEabc" not in out and "abcdefgh12345" not in out
    assert redact("client_id is required") == "client_id is required"  # plain prose is left alone


def test_url_encoded_registered_secret_is_masked(clean_env):
    token = "hf_SecretToken/with+odd=chars123"
    set_value(clean_env, "webhook_url", "https://hooks.example/T0/B1/xyz?k=" + token)
    Settings.load()
    webhook = Settings.load().secret("webhook_url")
    for form in (webhook, quote(webhook, safe=""), quote_plus(webhook), json.dumps(webhook)):
        assert webhook not in redact(f"posting to {form}") and quote(webhook, safe="") not in redact(form)


def test_state_db_and_its_journal_are_0600(clean_env):
    os.umask(0o022)
    store = StateStore(clean_env / "state.db")
    store.add_cost(Cost("1", "r", "gpu", 0.5, 0, 1))
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        path = clean_env / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    (clean_env / "old.db").touch(mode=0o644)  # what an older version left behind
    StateStore(clean_env / "old.db")
    assert stat.S_IMODE((clean_env / "old.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("value, ok", [
    ("gs://my-bucket", "gs://my-bucket"), ("gs://my-bucket/lora/", "gs://my-bucket/lora"),
    ("gs://my.bucket.name/a/b", "gs://my.bucket.name/a/b"), ("/srv/lora", "/srv/lora"), ("~/lora", "~/lora"),
    ("gs://b/../../x", None), ("gs://bucket/a//b", None), ("gs://bucket/./x", None), ("gs://B", None),
    ("gs://ab", None), ("gs://-bucket", None), ("gs://google-x", None), ("gs://192.168.1.1", None),
    ("s3://bucket", None), ("http://example.com/b", None), ("file:///tmp/x", None), ("relative/folder", None),
    ("gs://bucket/a\nb", None),
])
def test_storage_urls_are_parsed_strictly(clean_env, value, ok):
    if ok is None:
        with pytest.raises(ConfigError):
            set_value(clean_env, "storage", value)
        assert not (clean_env / "config.toml").exists()
    else:
        set_value(clean_env, "storage", value)
        assert Settings.load().storage == ok


def test_s3_is_refused_with_a_clear_message(clean_env):
    with pytest.raises(ConfigError, match="s3:// is not supported: use gs://"):
        set_value(clean_env, "storage", "s3://bucket/x")


@pytest.mark.parametrize("value", ["javascript:alert(1)", "file:///etc/passwd", "ftp://x", "http://", "console.vast.ai",
                                   "https://user:pw@console.vast.ai", "https://console.vast.ai:99999",
                                   "https://console vast.ai"])
def test_vast_url_must_be_http(clean_env, value):
    with pytest.raises(ConfigError, match="vast_url"):
        set_value(clean_env, "vast_url", value)


@pytest.mark.parametrize("value, entries", [
    ("comfy.lan, https://Comfy.Example.com/", ("comfy.lan", "https://comfy.example.com")),
    ("192.168.1.5 [fe80::1] http://10.0.0.2:8188", ("192.168.1.5", "fe80::1", "http://10.0.0.2:8188")),
    ("", ()),
])
def test_allowed_hosts(clean_env, value, entries):
    set_value(clean_env, "allowed_hosts", value)
    assert Settings.load().allowed_host_list == entries


@pytest.mark.parametrize("value", ["*", "*.example.com", "https://x.example/path", "javascript:x", "a_b.example",
                                   "-x.example", "http://u@x.example"])
def test_allowed_hosts_refuses_wildcards_and_junk(clean_env, value):
    with pytest.raises(ConfigError, match="allowed_hosts"):
        set_value(clean_env, "allowed_hosts", value)
