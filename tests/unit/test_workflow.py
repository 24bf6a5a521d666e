"""example_workflows/dataset_to_lora.json: generated from example_workflows/build_dataset_to_lora.py (no drift),
and a consistent graph: every link joins an output and an input of the same type, in both
directions, and the API form has the same nodes and edges. (A real ComfyUI validating it through
/prompt is tests/integration/test_comfyui_graph.py, opt-in.)"""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _builder():
    spec = importlib.util.spec_from_file_location("build_dataset_to_lora", REPO / "example_workflows" / "build_dataset_to_lora.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_workflow_is_what_the_builder_writes():
    on_disk = json.loads((REPO / "example_workflows" / "dataset_to_lora.json").read_text())
    assert on_disk == _builder().ui_workflow(), "run: python example_example_workflows/build_dataset_to_lora.py"


def test_links_are_consistent_and_typed():
    wf = _builder().ui_workflow()
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] == max(nodes)
    for lid, src, slot, dst, dslot, typ in wf["links"]:
        out = nodes[src]["outputs"][slot]
        inp = nodes[dst]["inputs"][dslot]
        assert out["type"] == inp["type"] == typ, (lid, out, inp)
        assert lid in out["links"] and inp["link"] == lid
    chain = [n["type"] for n in wf["nodes"]]
    for a, b in [("LoraCloudLoadImages", "LoraCloudCropForTraining"), ("LoraCloudSaveDataset", "LoraCloudLaunchTrainer"),
                 ("LoraCloudAwaitLora", "LoraCloudLoraLoader"), ("KSampler", "VAEDecode"), ("VAEDecode", "SaveImage")]:
        assert chain.index(a) < chain.index(b)


def test_api_form_matches():
    b = _builder()
    wf, prompt = b.ui_workflow(), b.api_prompt()
    assert set(prompt) == {str(n["id"]) for n in wf["nodes"]}
    edges = {(str(dst), str(src), slot) for _l, src, slot, dst, _ds, _t in wf["links"]}
    got = {(nid, v[0], v[1]) for nid, node in prompt.items() for v in node["inputs"].values() if isinstance(v, list)}
    assert got == edges
    assert prompt["16"]["inputs"]["seed"] == 42 and "control_after_generate" not in prompt["16"]["inputs"]
