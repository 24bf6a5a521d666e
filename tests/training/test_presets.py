"""Presets: tiers, per-type choices, overrides, the step plan."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.training.presets import PRESET_TYPES, load_preset, pick_tier, plan_steps


@pytest.mark.parametrize("vram,tier", [(24, 24), (23.6, 24), (40, 48), (48, 48), (79.6, 80), (141, 80)])
def test_tier_is_the_largest_that_fits(vram, tier):
    assert pick_tier(vram) == tier


def test_too_little_vram_is_refused():
    with pytest.raises(ConfigError, match="16 GB"):
        pick_tier(16)


@pytest.mark.parametrize("name", PRESET_TYPES)
def test_every_preset_keeps_the_reference_essentials(name):
    for vram in (24, 48, 80):
        p = load_preset(name, vram)
        t = p.training
        assert t["network_module"] == "networks.lora_flux" and t["network_train_unet_only"] is True
        assert t["network_alpha"] == float(t["network_dim"])  # alpha = rank
        assert t["cache_latents_to_disk"] and t["cache_text_encoder_outputs_to_disk"]
        assert (t["timestep_sampling"], t["discrete_flow_shift"], t["guidance_scale"]) == ("shift", 3.1582, 1.0)
        assert t["gradient_accumulation_steps"] == 1 and t["save_state"] and t["save_every_n_epochs"] == 1
        assert p.subset["caption_extension"] == ".txt" and p.subset["shuffle_caption"] is False
        assert t["fp8_base"] is (vram == 24)


def test_types_differ_as_intended():
    ch, st, co = (load_preset(n, 24) for n in ("character", "style", "concept"))
    assert ch.training["learning_rate"] > co.training["learning_rate"] > st.training["learning_rate"]
    assert st.plan["min_steps"] > co.plan["min_steps"] > ch.plan["min_steps"]
    assert (ch.prep["crop_focus"], co.prep["crop_focus"], st.prep["aspect"]) == ("face", "object", "varied")
    assert st.dataset["max_bucket_reso"] > ch.dataset["max_bucket_reso"]


def test_bigger_tiers_use_bigger_batches():
    assert [load_preset("character", v).dataset["batch_size"] for v in (24, 48, 80)] == [1, 1, 2]
    assert load_preset("style", 80).dataset["batch_size"] == 4
    assert load_preset("character", 80).training["highvram"] is True


def test_block_swap_only_for_large_rank_on_24gb():
    assert "blocks_to_swap" not in load_preset("character", 24).training
    assert load_preset("style", 24).training["blocks_to_swap"] == 8  # rank 32
    assert load_preset("character", 24, {"network_dim": 32, "network_alpha": 32}).training["blocks_to_swap"] == 8
    assert "blocks_to_swap" not in load_preset("style", 48).training
    # the user's choice wins, and cpu offload excludes block swap (kohya asserts it)
    assert load_preset("style", 24, {"blocks_to_swap": 4}).training["blocks_to_swap"] == 4
    assert "blocks_to_swap" not in load_preset("style", 24, {"cpu_offload_checkpointing": True}).training


def test_overrides_go_to_the_right_section_and_keep_types():
    p = load_preset("concept", 48, {"learning_rate": 3e-4, "resolution": 768, "subset.num_repeats": 5,
                                     "network_dim": 24.0, "network_alpha": 24, "optimizer_args": ["a=1"]})
    assert p.training["learning_rate"] == 3e-4 and p.dataset["resolution"] == 768 and p.subset["num_repeats"] == 5
    assert p.training["network_dim"] == 24 and isinstance(p.training["network_dim"], int)
    assert p.training["network_alpha"] == 24.0 and isinstance(p.training["network_alpha"], float)
    assert p.training["optimizer_args"] == ["a=1"]
    assert "sdpa" not in load_preset("concept", 48, {"sdpa": None}).training


@pytest.mark.parametrize("overrides,match", [
    ({"resolution": "512"}, "expected int"),  # kohya never type-checks its TOML: a str crashes it hours later, on the GPU
    ({"network_train_unet_only": 1}, "expected bool"),
    ({"bogus.key": 1}, "unknown section"),
])
def test_bad_overrides_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_preset("character", 24, overrides)


def test_unknown_type_is_refused():
    with pytest.raises(ConfigError, match="character, style, concept"):
        load_preset("portrait", 24)


def test_step_plan_from_image_count():
    ch = load_preset("character", 24)
    plan = plan_steps(ch, 15)  # 15 x 80 = 1200 steps, epochs of ~150 steps
    assert plan.repeats == 10 and plan.steps_per_epoch == 150 and plan.epochs == 8 and plan.total_steps == 1200
    assert plan_steps(ch, 3).total_steps == pytest.approx(800, rel=0.1)  # clamped up to min_steps
    assert plan_steps(ch, 100).total_steps == pytest.approx(1600, rel=0.1)  # clamped down to max_steps
    big = plan_steps(load_preset("character", 80), 15)  # batch 2: half the steps, each sees 2 images
    assert big.batch_size == 2 and big.total_steps == pytest.approx(600, rel=0.1)


def test_step_plan_overrides_win():
    p = load_preset("style", 24, {"subset.num_repeats": 3, "max_train_epochs": 7})
    plan = plan_steps(p, 40)
    assert (plan.repeats, plan.steps_per_epoch, plan.epochs) == (3, 120, 7)
    with pytest.raises(ConfigError):
        plan_steps(p, 0)
