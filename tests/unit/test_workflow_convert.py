"""A canvas workflow (what ComfyUI saves) made into the API form /prompt takes
(service/templates/convert.py), against node definitions recorded from a real ComfyUI with the packs
(tests/data/object_info.json):

- every shipped workflow in example_workflows/ converts to exactly the API form the builder writes
  (and that ComfyUI's own frontend makes of it: tests/integration/test_comfyui_templates.py), and
  the result passes the recorded definitions' checks;
- hand-made canvases for each rule: links and inputs a pack's JavaScript added; widget values in
  the definition's order with the seed's control value and the upload value skipped, a linked
  widget keeping its place, missing values taking defaults, values given as a dict; muted and
  bypassed nodes; reroutes; PrimitiveNode values; KJNodes' Set/Get; notes and canvas-only nodes
  the remote lacks left out; a missing node that something needs, subgraphs and group nodes
  refused with the node named.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.service.templates.convert import to_api, widget_names
from tests.fixtures.object_info import check_api, load

REPO = Path(__file__).resolve().parents[2]
DEFS = load()
TEMPLATES = ["basic_txt2img", "lora_comparison", "img2img_refine", "batch_generation", "controlnet_pose", "upscale_4x"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_converts_to_the_api_form_the_builder_writes(name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    converted = to_api(ui, DEFS)
    assert converted.prompt == json.loads((REPO / "example_workflows" / "api" / f"{name}.json").read_text())
    assert converted.ignored == []  # the notes are canvas-only, not "missing"
    assert check_api(converted.prompt, DEFS, name) == []


def test_the_dataset_to_lora_graph_converts_too():
    spec = importlib.util.spec_from_file_location("b", REPO / "example_workflows" / "build_dataset_to_lora.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    prompt = to_api(json.loads((REPO / "example_workflows" / "dataset_to_lora.json").read_text()), DEFS).prompt
    assert {nid: {k: v for k, v in node.items() if k != "_meta"} for nid, node in prompt.items()} == mod.api_prompt()


# ---- hand-made canvases ------------------------------------------------------------------------
class Canvas:
    """A canvas workflow as the frontend saves it (format 0.4), built node by node."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []

    def add(self, nid: int, kind: str, widgets: Any = (), inputs: tuple = (), outputs: tuple = (), *, mode: int = 0,
            title: str | None = None) -> dict[str, Any]:
        """``inputs``: (name, type) or (name, type, widget name); ``outputs``: types."""
        node = {"id": nid, "type": kind, "mode": mode, "pos": [0, 0], "size": [200, 100], "flags": {},
                "inputs": [{"name": i[0], "type": i[1], "link": None, **({"widget": {"name": i[2]}} if len(i) > 2
                                                                         else {})} for i in inputs],
                "outputs": [{"name": t, "type": t, "links": [], "slot_index": s} for s, t in enumerate(outputs)],
                "properties": {}, "widgets_values": widgets if isinstance(widgets, dict) else list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, src: int, slot: int, dst: int, input_name: str) -> None:
        lid = len(self.links) + 1
        source = next(n for n in self.nodes if n["id"] == src)
        target = next(n for n in self.nodes if n["id"] == dst)
        index = next(i for i, e in enumerate(target["inputs"]) if e["name"] == input_name)
        source["outputs"][slot]["links"].append(lid)
        target["inputs"][index]["link"] = lid
        self.links.append([lid, src, slot, dst, index, source["outputs"][slot]["type"]])

    def ui(self, **extra: Any) -> dict[str, Any]:
        return {"last_node_id": max(n["id"] for n in self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4,
                **extra}


def _draw() -> Canvas:
    """EmptyImage -> ImageInvert -> SaveImage: core nodes a CPU ComfyUI runs."""
    c = Canvas()
    c.add(1, "EmptyImage", [64, 48, 1, 255], outputs=("IMAGE",))
    c.add(2, "ImageInvert", inputs=(("image", "IMAGE"),), outputs=("IMAGE",))
    c.add(3, "SaveImage", ["draw"], inputs=(("images", "IMAGE"),))
    c.link(1, 0, 2, "image")
    c.link(2, 0, 3, "images")
    return c


def test_links_widgets_titles_and_inputs_a_packs_javascript_added():
    c = _draw()
    c.nodes[0]["title"] = "Canvas"
    c.add(4, "ImageConcatMulti", [3, "down", True],  # KJNodes: image_3 exists only on the canvas
          inputs=(("image_1", "IMAGE"), ("image_2", "IMAGE"), ("image_3", "IMAGE")), outputs=("IMAGE",))
    for name in ("image_1", "image_2", "image_3"):
        c.link(2, 0, 4, name)
    c.add(5, "PreviewImage", inputs=(("images", "IMAGE"),))
    c.link(4, 0, 5, "images")
    prompt = to_api(c.ui(), DEFS).prompt
    assert prompt["1"] == {"inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255},
                           "class_type": "EmptyImage", "_meta": {"title": "Canvas"}}
    assert prompt["2"]["_meta"] == {"title": "Invert Image"}  # no title: the definition's display name
    assert prompt["3"]["inputs"] == {"filename_prefix": "draw", "images": ["2", 0]}
    assert prompt["4"]["inputs"] == {"inputcount": 3, "direction": "down", "match_image_size": True,
                                     "image_1": ["2", 0], "image_2": ["2", 0], "image_3": ["2", 0]}
    assert check_api(prompt, DEFS) == []


def _sampler(c: Canvas, nid: int, widgets: Any, seed_linked: bool = False) -> None:
    inputs = [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")]
    if seed_linked:
        inputs.append(("seed", "INT", "seed"))
    c.add(nid, "KSampler", widgets, inputs=tuple(inputs), outputs=("LATENT",))


def test_seed_control_and_upload_values_are_skipped_and_a_linked_widget_keeps_its_place():
    assert widget_names(DEFS["KSampler"])[:3] == ["seed", "control_after_generate", "steps"]
    assert widget_names(DEFS["LoadImage"]) == ["image", "upload"]
    assert widget_names(DEFS["RandomNoise"]) == ["noise_seed", "control_after_generate"]
    c = _draw()
    _sampler(c, 10, [7, "randomize", 12, 3.5, "euler", "simple", 0.8])
    _sampler(c, 11, [7, "fixed", 12, 3.5, "euler", "simple", 0.8], seed_linked=True)
    c.add(12, "PrimitiveInt", [99, "increment"], outputs=("INT",))  # a flagged INT that is not named seed
    c.link(12, 0, 11, "seed")
    c.add(13, "LoadImage", ["photo.png", "image"], outputs=("IMAGE", "MASK"))
    c.add(14, "RandomNoise", [5, "fixed"], outputs=("NOISE",))
    prompt = to_api(c.ui(), DEFS).prompt
    want = {"seed": 7, "steps": 12, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "denoise": 0.8}
    assert prompt["10"]["inputs"] == want
    assert prompt["11"]["inputs"] == {**want, "seed": ["12", 0]}  # the link wins, the value kept its place
    assert prompt["12"]["inputs"] == {"value": 99}
    assert prompt["13"]["inputs"] == {"image": "photo.png"}
    assert prompt["14"]["inputs"] == {"noise_seed": 5}


def test_a_seed_named_so_without_the_flag_and_a_canvas_without_the_control_value():
    defs = {**DEFS, "Seeded": {"input": {"required": {"noise_seed": ["INT", {"default": 0}],
                                                      "steps": ["INT", {"default": 20}]}},
                               "input_order": {"required": ["noise_seed", "steps"]}, "output": ["INT"],
                               "output_node": False, "name": "Seeded"}}
    assert widget_names(defs["Seeded"]) == ["noise_seed", "control_after_generate", "steps"]
    c = _draw()
    c.add(20, "Seeded", [3, "fixed", 9], outputs=("INT",))
    c.add(21, "Seeded", [3, 9], outputs=("INT",))  # saved by a frontend that kept no control value
    prompt = to_api(c.ui(), defs).prompt
    assert prompt["20"]["inputs"] == prompt["21"]["inputs"] == {"noise_seed": 3, "steps": 9}


def test_missing_values_take_defaults_list_values_are_wrapped_and_dict_values_are_read_by_name():
    c = _draw()
    c.add(4, "ImageScale", ["bicubic", 32], inputs=(("image", "IMAGE"),), outputs=("IMAGE",))  # height, crop missing
    c.link(1, 0, 4, "image")
    c.add(5, "ImageBlur", {"sigma": 2.5, "blur_radius": 3, "videopreview": {"hidden": False}},
          inputs=(("image", "IMAGE"),), outputs=("IMAGE",))
    c.link(4, 0, 5, "image")
    c.add(6, "SaveImage", [["a", "b"]], inputs=(("images", "IMAGE"),))
    c.link(5, 0, 6, "images")
    prompt = to_api(c.ui(), DEFS).prompt
    assert prompt["4"]["inputs"] == {"upscale_method": "bicubic", "width": 32, "height": 512, "crop": "disabled",
                                     "image": ["1", 0]}
    assert prompt["5"]["inputs"] == {"blur_radius": 3, "sigma": 2.5, "image": ["4", 0]}
    assert prompt["6"]["inputs"]["filename_prefix"] == {"__value__": ["a", "b"]}  # as the frontend sends it


def test_muted_nodes_go_with_the_inputs_they_fed_and_bypassed_ones_pass_their_input_through():
    c = _draw()
    c.nodes[1]["mode"] = 4  # ImageInvert bypassed: SaveImage gets EmptyImage's image
    c.add(4, "ImageBlur", [1, 1.0], inputs=(("image", "IMAGE"),), outputs=("IMAGE",), mode=2)  # muted
    c.link(1, 0, 4, "image")
    c.add(5, "PreviewImage", inputs=(("images", "IMAGE"),))
    c.link(4, 0, 5, "images")
    prompt = to_api(c.ui(), DEFS).prompt
    assert set(prompt) == {"1", "3", "5"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]
    assert prompt["5"]["inputs"] == {}  # fed by a muted node: left out, as the frontend leaves it
    # a bypassed node without an input of the consumer's type passes nothing
    c = _draw()
    c.add(4, "EmptyLatentImage", [64, 64, 1], outputs=("LATENT",), mode=4)
    c.add(5, "PreviewImage", inputs=(("images", "IMAGE"),))
    c.link(4, 0, 5, "images")
    assert to_api(c.ui(), DEFS).prompt["5"]["inputs"] == {}


def test_reroutes_primitives_and_kjnodes_set_get_are_followed():
    c = _draw()
    c.add(30, "Reroute", inputs=(("", "*"),), outputs=("IMAGE",))
    c.add(31, "Reroute", inputs=(("", "*"),), outputs=("IMAGE",))
    c.link(1, 0, 30, "")
    c.link(30, 0, 31, "")
    c.add(32, "PreviewImage", inputs=(("images", "IMAGE"),))
    c.link(31, 0, 32, "images")
    # a PrimitiveNode feeding EmptyImage's width directly, and its height through a reroute
    c.nodes[0]["inputs"] = [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": None},
                            {"name": "height", "type": "INT", "widget": {"name": "height"}, "link": None}]
    c.add(33, "PrimitiveNode", [300, "fixed"], outputs=("INT",))
    c.add(34, "Reroute", inputs=(("", "*"),), outputs=("INT",))
    c.link(33, 0, 1, "width")
    c.link(33, 0, 34, "")
    c.link(34, 0, 1, "height")
    c.add(35, "SetNode", ["picture"], inputs=(("IMAGE", "IMAGE"),), outputs=("IMAGE",))
    c.link(2, 0, 35, "IMAGE")
    c.add(36, "GetNode", ["picture"], outputs=("IMAGE",))
    c.add(37, "PreviewImage", inputs=(("images", "IMAGE"),))
    c.link(36, 0, 37, "images")
    c.add(38, "Note", ["read me"])
    c.add(39, "MarkdownNote", ["# read me"])
    converted = to_api(c.ui(), DEFS)
    prompt = converted.prompt
    assert set(prompt) == {"1", "2", "3", "32", "37"} and converted.ignored == []
    assert prompt["32"]["inputs"] == {"images": ["1", 0]}
    assert prompt["1"]["inputs"] == {"width": 300, "height": 300, "batch_size": 1, "color": 255}
    assert prompt["37"]["inputs"] == {"images": ["2", 0]}
    assert check_api(prompt, DEFS) == []
    next(n for n in c.nodes if n["id"] == 36)["widgets_values"] = ["other"]  # a name nobody sets
    with pytest.raises(ConfigError, match="GetNode 36 reads 'other'"):
        to_api(c.ui(), DEFS)


def test_a_node_the_remote_lacks_is_named_when_needed_and_left_out_when_nothing_uses_it():
    c = _draw()
    c.add(40, "Fast Groups Bypasser (rgthree)", [], outputs=("*",))  # canvas-only: its output feeds nothing
    c.add(41, "Image Save (WAS)", ["x"], inputs=(("images", "IMAGE"),))  # a sink from a pack not installed
    c.link(2, 0, 41, "images")
    converted = to_api(c.ui(), DEFS)
    assert set(converted.prompt) == {"1", "2", "3"}
    assert converted.ignored == ["node 40 (Fast Groups Bypasser (rgthree))", "node 41 (Image Save (WAS))"]

    c.add(42, "Fancy Upscaler", [2], inputs=(("image", "IMAGE"),), outputs=("IMAGE",), title="Upscale")
    c.link(1, 0, 42, "image")
    c.nodes[2]["inputs"][0]["link"] = None
    c.link(42, 0, 3, "images")
    with pytest.raises(ConfigError, match=r"node 42 \(Fancy Upscaler, titled 'Upscale'\) is a node type the remote "
                                          r"ComfyUI does not have, and node 3 \(SaveImage\)\.images needs its output"):
        to_api(c.ui(), DEFS)

    c = Canvas()  # nothing the remote can run
    c.add(1, "EmptyImage", [64, 48, 1, 0], outputs=("IMAGE",))
    c.add(2, "Image Save (WAS)", ["x"], inputs=(("images", "IMAGE"),))
    c.link(1, 0, 2, "images")
    with pytest.raises(ConfigError, match=r"no output node .* lacks them: node 2 \(Image Save \(WAS\)\)"):
        to_api(c.ui(), DEFS)


def test_subgraphs_and_group_nodes_are_refused_with_the_way_out():
    c = _draw()
    c.add(50, "8a3b0c4e-5d6f-4a1b-9c2d-3e4f5a6b7c8d", [], outputs=("IMAGE",))
    subgraph = c.ui(definitions={"subgraphs": [{"id": "8a3b0c4e-5d6f-4a1b-9c2d-3e4f5a6b7c8d", "nodes": []}]})
    with pytest.raises(ConfigError, match=r"node 50 is a subgraph.*Export \(API\)"):
        to_api(subgraph, DEFS)
    c = _draw()
    c.add(51, "workflow>Upscale group", [], outputs=("IMAGE",))
    with pytest.raises(ConfigError, match=r"node 51 \(workflow>Upscale group\) is a group node.*Export \(API\)"):
        to_api(c.ui(extra={"groupNodes": {"Upscale group": {"nodes": []}}}), DEFS)


def test_links_in_the_object_form_of_newer_frontends():
    ui = _draw().ui()
    ui["links"] = [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
                    "type": l[5]} for l in ui["links"]]
    assert to_api(ui, DEFS).prompt["3"]["inputs"]["images"] == ["2", 0]
