import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import validate_name
from comfy_lora_cloud.storage import layout
from comfy_lora_cloud.storage.base import clean_key


@pytest.mark.parametrize("name", ["cat", "my_character v2", "a.b-c_d", "X" * 100, "日本"])
def test_good_names(name):
    if name == "日本":
        with pytest.raises(ConfigError):
            validate_name(name)
    else:
        assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", "../etc", "a/b", "a\\b", "bad\x00", "tab\tname", " lead", "trail ", ".hidden", "X" * 101, "a..b"]
)
def test_bad_names_are_refused_with_a_clear_message(name):
    with pytest.raises(ConfigError) as exc:
        layout.dataset_prefix(name)
    assert "dataset name" in str(exc.value)


@pytest.mark.parametrize("key", ["/abs", "a//b", "a/../b", "a/./b", "", "a\\b", "x\x00"])
def test_bad_keys(key):
    with pytest.raises(ConfigError):
        clean_key(key)
