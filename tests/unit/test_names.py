import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import validate_name
from comfy_lora_cloud.storage import layout
from comfy_lora_cloud.storage.base import clean_key


@pytest.mark.parametrize("name", ["cat", "my_character v2", "a.b-c_d", "X" * 100, "日本", "café", "Ωmega 2",
                                  "अनु"])
def test_good_names(name):
    assert validate_name(name) == name


def test_names_are_nfc_normalised():
    decomposed = "cafe\u0301"  # e + combining acute, as macOS file names spell it
    assert validate_name(decomposed) == "café" and len(validate_name(decomposed)) == 4
    assert layout.dataset_prefix(decomposed) == "datasets/café/"


@pytest.mark.parametrize("name", ["a\u200bb", "a\u202eb", "\u0301x", "a\uff0fb", "a\u2044b", "x\u0085y", "a\u00a0b",
                                  "é" * 101])
def test_unicode_that_is_not_a_letter_is_refused(name):
    """Zero-width and right-to-left format characters, a leading combining mark, look-alike
    slashes, C1 controls, non-breaking spaces and over-long names."""
    with pytest.raises(ConfigError):
        validate_name(name)


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
