import logging
import stat

import pytest

from comfy_lora_cloud.errors import ConfigError, redact
from comfy_lora_cloud.settings import Settings, install_log_redaction, set_value

KEY = "vk_live_0123456789abcdefSECRET"


def test_defaults_use_a_bucket_folder_in_home(clean_env):
    s = Settings.load()
    assert s.home == clean_env
    assert s.storage_url == str(clean_env / "bucket")
    assert s.vast_api_key is None


def test_env_beats_file_and_vast_api_key_alias(clean_env, monkeypatch):
    set_value(clean_env, "max_dph", "1.5")
    assert Settings.load().max_dph == 1.5
    monkeypatch.setenv("LORA_CLOUD_MAX_DPH", "0.7")
    assert Settings.load().max_dph == 0.7
    monkeypatch.setenv("VAST_API_KEY", KEY)
    assert Settings.load().secret("vast_api_key") == KEY


def test_secret_goes_to_a_0600_file_and_never_to_config(clean_env):
    assert set_value(clean_env, "vast_api_key", KEY) is True
    secrets = clean_env / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert KEY in secrets.read_text()
    assert not (clean_env / "config.toml").exists() or KEY not in (clean_env / "config.toml").read_text()
    s = Settings.load()
    assert s.secret("vast_api_key") == KEY
    assert KEY not in repr(s) and KEY not in str(s.masked()) and KEY not in s.model_dump_json()


def test_bad_values_are_refused_before_writing(clean_env):
    with pytest.raises(ConfigError, match="max_dph"):
        set_value(clean_env, "max_dph", "-3")
    with pytest.raises(ConfigError, match="unknown setting"):
        set_value(clean_env, "nonsense", "1")
    with pytest.raises(ConfigError, match="bucket name"):
        set_value(clean_env, "storage", "gs://")
    assert not (clean_env / "config.toml").exists()


def test_secret_is_masked_in_captured_logs(clean_env, caplog):
    set_value(clean_env, "hf_token", "hf_abcdefghijklmnopqrstuvwxyz")
    Settings.load()  # registers the secret for redaction
    log = logging.getLogger("comfy_lora_cloud.test")
    with caplog.at_level(logging.INFO):
        install_log_redaction()  # what the CLI and the ComfyUI entry point call
        log.info("calling hub with token %s", "hf_abcdefghijklmnopqrstuvwxyz")
        log.info("Authorization: Bearer %s", KEY)
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in caplog.text
    assert KEY not in caplog.text
    assert "****" in caplog.text


def test_redact_masks_private_keys_and_bearer_tokens():
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEabc\n-----END PRIVATE KEY-----"
    out = redact(f"creds {pem} and Bearer abcdefghijklmnop")
    assert "MIIEabc" not in out and "abcdefghijklmnop" not in out


@pytest.mark.parametrize("key, value, words", [
    ("max_dph", "nan", "finite"), ("max_run_usd", "inf", "finite"), ("max_month_usd", "1e309", "finite"),
    ("max_dph", "-1", "greater than or equal to 0"), ("max_dph", "5000", "less than or equal to 500"),
    ("max_run_hours", "0", "greater than or equal to 0.0166"), ("max_run_hours", "100000", "less than or equal to 744"),
    ("max_run_hours", "1e-300", "greater than or equal to 0.0166"),  # at least a minute
    ("session_max_hours", "1e-300", "greater than or equal to 0.0166"),
])
def test_budgets_are_finite_numbers_in_a_sane_range(clean_env, key, value, words):
    with pytest.raises(ConfigError, match=words):
        set_value(clean_env, key, value)
    assert not (clean_env / "config.toml").exists()  # nothing written


def test_zero_turns_a_dollar_limit_off_everywhere(clean_env):
    from comfy_lora_cloud.models import Instance
    from comfy_lora_cloud.providers.pricing import Job
    from comfy_lora_cloud.service.money.budgets import Budgets, check_launch, evaluate

    for key in ("max_dph", "max_run_usd", "max_month_usd"):
        set_value(clean_env, key, "0")
    budgets = Budgets.from_settings(Settings.load())
    check_launch(budgets, dph=40.0, month_spent=1e5, expected_usd=1e4)  # nothing refused
    pricey = Instance(id="1", run_id="r", dph_total=40.0)
    assert evaluate(budgets, [pricey], run_usd={"r": 1e4}, month_usd=1e5, now=0.0, first_seen={"1": 0.0}) == []
    assert Job(max_dph=budgets.max_dph).max_dph is None  # the offer picker: no $/hr filter
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError):
            Budgets(max_dph=bad)
    for short in (0, 1e-300):
        with pytest.raises(ConfigError, match="at least a minute"):
            Budgets(max_run_hours=short)
