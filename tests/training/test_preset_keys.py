"""Overrides (``--set``) name keys the presets or kohya know, with values in a sane range:
a typo or a sign error fails here, not hours later on a paid GPU (training/presets.py)."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.training.presets import load_preset


@pytest.mark.parametrize("overrides,words", [
    ({"lerning_rate": 1e-4}, "did you mean 'learning_rate'"),
    ({"netwrk_dim": 8}, "did you mean 'network_dim'"),
    ({"training.batch_size": 2}, "unknown setting 'training.batch_size'"),  # it lives in [dataset]
    ({"completely_unknown": 1}, "unknown setting 'completely_unknown'"),
    ({"learning_rate": -1.0}, "is outside 1e-07..0.01"),
    ({"learning_rate": 0.0}, "is outside"),
    ({"learning_rate": float("nan")}, "not a finite number"),
    ({"noise_offset": float("inf")}, "not a finite number"),
    ({"network_dim": 0}, "is outside 1..512"),
    ({"network_dim": 4096}, "is outside"),
    ({"dataset.resolution": 100000}, "is outside"),
    ({"max_train_steps": 0}, "is outside"),
    ({"blocks_to_swap": 40}, "is outside 0..35"),
])
def test_bad_overrides_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_preset("character", 24, overrides)


def test_known_keys_and_kohya_extras_are_accepted():
    p = load_preset("style", 24, {"learning_rate": 3e-4, "dataset.resolution": 768, "noise_offset": 0.05,
                                  "subset.num_repeats": 2, "min_snr_gamma": 5.0, "max_train_steps": 1200})
    assert p.training["learning_rate"] == 3e-4 and p.dataset["resolution"] == 768
    assert p.training["noise_offset"] == 0.05 and p.subset["num_repeats"] == 2 and p.training["max_train_steps"] == 1200
    assert "lerning_rate" not in p.training
