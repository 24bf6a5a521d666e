"""The six workflow templates (comfy_lora_cloud/workflows/templates.py):

- the files in example_workflows/ are what the builder writes (UI form and API form), and the
  template browser would list exactly the templates (not the API files);
- every node of every template, in every variant, matches the definitions a real ComfyUI with
  the packs exposes (tests/data/object_info.json, recorded by the opt-in test): its sockets and
  their types in order, its widgets in the frontend's order with values the node accepts, its
  outputs; every link joins an output and an input of one type, in the UI and the API form;
- the API form drops muted nodes and wires around bypassed ones, as the frontend does;
- templates load by name with a LoRA and a prompt filled in (what ``lora-cloud comfy run`` and
  the LoRA test use), and refuse unknown names, parameters and LoRA names.
"""

from __future__ import annotations

import glob
import importlib.util
import json
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.service.templates.catalog import describe_templates, load_template, split_prompts, ui_template
from comfy_lora_cloud.workflows import TEMPLATES
from tests.fixtures.object_info import all_variants, check_api, check_graph, load, needed_types

REPO = Path(__file__).resolve().parents[2]
SIX = {"basic_txt2img", "lora_comparison", "img2img_refine", "batch_generation", "controlnet_pose", "upscale_4x"}


def _builder():
    spec = importlib.util.spec_from_file_location("build_templates", REPO / "example_workflows" / "build_templates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_six_are_there():
    assert set(TEMPLATES) == SIX
    assert {d.name for d in describe_templates()} == SIX


def test_checked_in_files_are_what_the_builder_writes():
    files = _builder().files()
    assert len(files) == 12
    for path, text in files.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} drifted: run python example_workflows/build_templates.py"
    stale = set((REPO / "example_workflows" / "api").glob("*.json")) - set(files)
    assert not stale, f"files the builder no longer writes: {stale}"


def test_the_template_browser_lists_the_templates_not_the_api_files(tmp_path):
    # ComfyUI (app/custom_node_manager.py) globs <custom_nodes>/*/example_workflows/*.json
    (tmp_path / "comfy_lora_cloud").symlink_to(REPO)
    listed = {Path(f).stem for f in glob.glob(str(tmp_path / "*" / "example_workflows" / "*.json"))}
    assert listed == SIX | {"dataset_to_lora"}
    for name in SIX:  # the UI form: what the canvas opens
        ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
        assert {"nodes", "links", "groups", "version"} <= set(ui)


def test_recorded_definitions_cover_every_node_type():
    assert needed_types() - set(load()) == set()


@pytest.mark.parametrize("name,graph", list(all_variants()), ids=[n for n, _g in all_variants()])
def test_every_node_and_link_matches_comfyui(name, graph):
    defs = load()
    assert check_graph(graph, defs) == []
    assert check_api(graph.api(), defs, name) == []


@pytest.mark.parametrize("name", sorted(SIX))
def test_ui_links_are_consistent(name):
    wf = TEMPLATES[name].graph().ui()
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] == max(nodes)
    assert wf["last_link_id"] == len(wf["links"]) == len({l[0] for l in wf["links"]})
    for lid, src, slot, dst, dslot, typ in wf["links"]:
        out, inp = nodes[src]["outputs"][slot], nodes[dst]["inputs"][dslot]
        assert out["type"] == inp["type"] == typ, (name, lid, out, inp)
        assert lid in out["links"] and inp["link"] == lid
    notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1 and "models/" in notes[0]["widgets_values"][0]  # says which files go where
    lora_slots = [n for n in wf["nodes"] if n["type"] == "LoraCloudLoraLoader"]
    assert lora_slots and all(n["widgets_values"][0] for n in lora_slots)
    unet = [n for n in wf["nodes"] if n["type"] == "UNETLoader"]
    assert [n["widgets_values"] for n in unet] == [["flux1-dev.safetensors", "fp8_e4m3fn"]]


def test_the_api_form_drops_muted_nodes_and_wires_around_bypassed_ones():
    one = TEMPLATES["lora_comparison"].graph()
    api = one.api()
    by_title = {n.title: n for n in one.nodes.values()}
    assert not any(n["_meta"]["title"].startswith(("LoRA B", "Sampler B", "Row B")) for n in api.values())
    assert "Stack rows (bypassed: one LoRA)" not in {n["_meta"]["title"] for n in api.values()}
    save = next(n for n in api.values() if n["class_type"] == "SaveImage")
    assert save["inputs"]["images"] == [str(by_title["Row A: side by side"].id), 0]
    strengths = sorted(n["inputs"]["strength_model"] for n in api.values() if n["class_type"] == "LoraCloudLoraLoader")
    assert strengths == [0.0, 0.5, 0.75, 1.0]
    seeds = {n["inputs"]["seed"] for n in api.values() if n["class_type"] == "KSampler"}
    assert seeds == {42}  # one seed: only the strength changes

    two = TEMPLATES["lora_comparison"].graph(lora="cat", lora_b="dog")
    api2 = two.api()
    stack = next(n for n in api2.values() if n["_meta"]["title"].startswith("Stack rows"))
    titles = {nid: n.title for nid, n in ((str(k), v) for k, v in two.nodes.items())}
    assert titles[stack["inputs"]["image_1"][0]] == "Row A: side by side"
    assert titles[stack["inputs"]["image_2"][0]] == "Row B: side by side"
    loras = sorted({n["inputs"]["lora_name"] for n in api2.values() if n["class_type"] == "LoraCloudLoraLoader"})
    assert loras == ["cat", "dog"]
    labels = {n["inputs"]["text"] for n in api2.values() if n["class_type"] == "AddLabel"}
    assert "dog @ 0.75" in labels and "cat @ 1" in labels


def test_load_template_fills_the_lora_and_the_prompt():
    api = load_template("basic_txt2img", lora="cat", prompt="photo of ohwx cat", seed=7)
    [lora] = [n for n in api.values() if n["class_type"] == "LoraCloudLoraLoader"]
    assert lora["inputs"]["lora_name"] == "cat"
    assert "photo of ohwx cat" in {n["inputs"].get("text") for n in api.values() if n["class_type"] == "CLIPTextEncode"}
    assert {n["inputs"]["seed"] for n in api.values() if n["class_type"] == "KSampler"} == {7}
    batch = load_template("batch_generation", lora="cat", prompt="on a beach\n# skipped\n\nin the snow", trigger="ohwx",
                          variations=2)
    [plist] = [n for n in batch.values() if n["class_type"] == "LoraCloudPromptList"]
    assert plist["inputs"] == {"text": "on a beach\nin the snow", "prefix": "ohwx"}
    assert [n for n in batch.values() if n["class_type"] == "EmptySD3LatentImage"][0]["inputs"]["batch_size"] == 2
    pose = load_template("controlnet_pose", lora="cat", image="pose.png")
    assert [n for n in pose.values() if n["class_type"] == "LoadImage"][0]["inputs"] == {"image": "pose.png"}
    assert ui_template("upscale_4x", lora="cat")["nodes"][0]["type"] == "MarkdownNote"


@pytest.mark.parametrize("call,message", [
    (lambda: load_template("txt2img"), "no template named"),
    (lambda: load_template("basic_txt2img", denoise=0.5), "takes no denoise"),
    (lambda: load_template("basic_txt2img", lora="../../etc/passwd"), "must not contain"),
    (lambda: load_template("lora_comparison", strengths=[1.0]), "compare 2 to 8"),
    (lambda: load_template("basic_txt2img", prompt="x" * 5000), "at most"),
])
def test_bad_requests_are_refused(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_split_prompts():
    assert split_prompts(" a \n\n# no\nb", "ohwx") == ["ohwx, a", "ohwx, b"]
    assert split_prompts("a\nb") == ["a", "b"]
    assert split_prompts("# only a comment\n") == []


def test_the_checks_catch_what_comfyui_would_refuse():
    """The checker itself can fail: a swapped widget order, a value not in a combo, a link of the
    wrong type, a missing required input."""
    defs = load()
    g = TEMPLATES["upscale_4x"].graph()
    detailer = next(n for n in g.nodes.values() if n.type == "DetailerForEach")
    detailer.widgets[0], detailer.widgets[1] = detailer.widgets[1], detailer.widgets[0]
    assert any("widgets" in p for p in check_graph(g, defs))

    g = TEMPLATES["basic_txt2img"].graph()
    ks = next(n for n in g.nodes.values() if n.type == "KSampler")
    unet = next(n for n in g.nodes.values() if n.type == "UNETLoader")
    ks.widgets = [(k, "dpmpp_9" if k == "sampler_name" else v) for k, v in ks.widgets]
    ks.sockets[1] = ("positive", "CONDITIONING", unet.out())
    problems = check_graph(g, defs)
    assert any("dpmpp_9" in p for p in problems) and any("-> KSampler.positive" in p for p in problems)
    api = g.api()
    del api[str(ks.id)]["inputs"]["steps"]
    assert any("required input steps missing" in p for p in check_api(api, defs))
