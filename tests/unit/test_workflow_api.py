"""Editing API-format workflows from outside the graph (service/templates/workflow_api.py): the prompt is the
text node the sampler's positive input leads to (through guidance nodes), the LoRA goes into every
LoRA loader with the pack's folder, NODE.INPUT=VALUE finds nodes by id, title or class; a canvas
workflow is taken, and made into the API form against the target's node definitions."""

import json
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.service.templates.workflow_api import parse_assignment, parse_workflow, prepare, resolve_workflow

REPO = Path(__file__).resolve().parents[2]

WF = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "f.safetensors", "weight_dtype": "default"}},
    "4": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x", "strength_model": 1}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg?", "clip": ["2", 0]}, "_meta": {"title": "Other"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["2", 0]}, "_meta": {"title": "Mine"}},
    "7": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3.5}},
    "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": 20, "positive": ["7", 0],
                                               "negative": ["5", 0]}},
}


def test_prompt_lora_seed_and_sets():
    out = prepare(WF, lora="my cat", prompt="ohwx cat", seed=9, sets=["Mine.text=\"final\"", "KSampler.steps=8",
                                                                     "4.strength_model=0.7"])
    assert out["6"]["inputs"]["text"] == "final"  # the prompt, then a set that wins
    assert out["5"]["inputs"]["text"] == "neg?"  # the negative is left alone
    assert out["4"]["inputs"]["lora_name"] == "lora_cloud/my cat.safetensors"
    assert out["8"]["inputs"]["seed"] == 9 and out["8"]["inputs"]["steps"] == 8
    assert out["4"]["inputs"]["strength_model"] == 0.7
    assert WF["6"]["inputs"]["text"] == "old"  # a copy


def test_refusals_are_clear():
    with pytest.raises(ConfigError, match="no LoRA loader"):
        prepare({"8": WF["8"]}, lora="a")
    with pytest.raises(ConfigError, match="'..'"):
        prepare(WF, lora="../x")
    with pytest.raises(ConfigError, match="is a link"):
        prepare(WF, sets=["KSampler.positive=3"])
    with pytest.raises(ConfigError, match="names 2 nodes"):
        prepare(WF, sets=["CLIPTextEncode.text=a"])
    with pytest.raises(ConfigError, match="NODE.INPUT=VALUE"):
        parse_assignment("steps=3")
    assert parse_assignment("3.cfg=1.5") == ("3", "cfg", 1.5) and parse_assignment("a.b=hi") == ("a", "b", "hi")
    with pytest.raises(ConfigError, match="canvas workflow with no nodes"):
        parse_workflow(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(ConfigError, match="no template named"):
        resolve_workflow("dataset_to_lora")  # a canvas workflow, not one of the templates
    assert resolve_workflow(json.dumps({"prompt": WF})).api()["8"]["class_type"] == "KSampler"  # a /prompt body


def test_a_canvas_workflow_is_converted_against_the_targets_definitions_then_edited():
    from tests.fixtures.object_info import load

    canvas = (REPO / "example_workflows" / "basic_txt2img.json").read_text()
    job = resolve_workflow(canvas, lora="my cat", prompt="ohwx cat", seed=5, sets=["KSampler.steps=4"])
    assert job.needs_object_info
    with pytest.raises(ConfigError, match="/object_info"):
        job.api()
    wf = job.api(load())
    want = prepare(json.loads((REPO / "example_workflows" / "api" / "basic_txt2img.json").read_text()),
                   lora="my cat", prompt="ohwx cat", seed=5, sets=["KSampler.steps=4"])
    assert wf == want and wf["5"]["inputs"]["lora_name"] == "my cat" and wf["10"]["inputs"]["steps"] == 4


def test_a_template_by_name_gets_the_lora_prompt_and_seed():
    job = resolve_workflow("basic_txt2img", lora="my cat", prompt="ohwx cat", seed=5, sets=["KSampler.steps=4"])
    assert not job.needs_object_info
    wf = job.api()
    [loader] = [n for n in wf.values() if n["class_type"] == "LoraCloudLoraLoader"]
    assert loader["inputs"]["lora_name"] == "my cat"
    assert "ohwx cat" in [n["inputs"].get("text") for n in wf.values() if n["class_type"] == "CLIPTextEncode"]
    [sampler] = [n for n in wf.values() if n["class_type"] == "KSampler"]
    assert sampler["inputs"]["seed"] == 5 and sampler["inputs"]["steps"] == 4


def test_the_cli_defaults_are_the_services():
    from comfy_lora_cloud.cli import comfy
    from comfy_lora_cloud.service import sessions

    assert comfy.DEFAULT_IDLE_MINUTES == sessions.DEFAULT_IDLE_MINUTES
