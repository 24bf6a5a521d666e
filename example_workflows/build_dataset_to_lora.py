"""Writes example_workflows/dataset_to_lora.json (ComfyUI's UI format) from the graph below, and gives
the same graph in API format (``api_prompt``) for queueing through /prompt in tests.

    python example_example_workflows/build_dataset_to_lora.py

Widget values are listed in each node's input order, as ComfyUI stores them (a seed with
"control after generate" stores that choice right after it).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dataset_to_lora.json"
PROMPT = "photo of ohwx woman as an astronaut on the moon, film grain"

# id: (type, title, pos, widgets [(name, value)...], inputs {name: (from_id, slot, type)},
#      outputs [(name, type)], widget inputs that take a link {name: (from_id, slot, type)})
NODES: dict[int, tuple] = {
    1: ("LoraCloudLoadImages", "Load Images", (20, 60), [("source", "input"), ("path", "my_photos")], {},
        [("images", "LORA_CLOUD_IMAGES"), ("summary", "STRING")], {}),
    2: ("LoraCloudCropForTraining", "Crop for Training", (360, 60),
        [("lora_type", "character"), ("crop", "auto"), ("resolution", 1024), ("trigger", "ohwx")],
        {"images": (1, 0, "LORA_CLOUD_IMAGES")}, [("images", "LORA_CLOUD_IMAGES")], {}),
    3: ("LoraCloudCaption", "Caption (Florence-2)", (700, 60),
        [("model", "florence"), ("model_path", ""), ("trigger", ""), ("overwrite", False)],
        {"images": (2, 0, "LORA_CLOUD_IMAGES")}, [("images", "LORA_CLOUD_IMAGES")], {}),
    4: ("LoraCloudPreviewDataset", "Preview Dataset", (1040, 300), [],
        {"images": (3, 0, "LORA_CLOUD_IMAGES")}, [("images", "LORA_CLOUD_IMAGES")], {}),
    5: ("LoraCloudSaveDataset", "Save Dataset", (1040, 60), [("name", "my_character"), ("replace", True),
                                                              ("force", False)],
        {"images": (3, 0, "LORA_CLOUD_IMAGES")}, [("dataset", "LORA_CLOUD_DATASET"), ("summary", "STRING")], {}),
    6: ("LoraCloudLaunchTrainer", "Launch vast.ai Trainer", (1380, 60),
        [("lora_type", "character"), ("lora_name", ""), ("trigger", ""), ("gpu", "auto"), ("max_usd", 10.0),
         ("max_dph", 2.0), ("max_hours", 6.0), ("interruptible", False), ("provider", "vast"),
         ("resume_wait_minutes", -1.0), ("max_attempts", 0), ("on_demand_after", -1)],
        {"dataset": (5, 0, "LORA_CLOUD_DATASET")}, [("run", "LORA_CLOUD_RUN"), ("summary", "STRING")], {}),
    7: ("LoraCloudAwaitLora", "Await LoRA", (1720, 60), [], {"run": (6, 0, "LORA_CLOUD_RUN")},
        [("lora_name", "STRING")], {}),
    8: ("UNETLoader", "Load Flux (dev)", (20, 560), [("unet_name", "flux1-dev.safetensors"),
                                                     ("weight_dtype", "fp8_e4m3fn")], {}, [("MODEL", "MODEL")], {}),
    9: ("DualCLIPLoader", "Load CLIP-L + T5", (20, 700),
        [("clip_name1", "clip_l.safetensors"), ("clip_name2", "t5xxl_fp8_e4m3fn.safetensors"), ("type", "flux"),
         ("device", "default")], {}, [("CLIP", "CLIP")], {}),
    10: ("VAELoader", "Load VAE", (20, 880), [("vae_name", "ae.safetensors")], {}, [("VAE", "VAE")], {}),
    11: ("LoraCloudLoraLoader", "Cloud LoRA Loader", (2060, 60),
         [("lora_name", ""), ("strength_model", 1.0), ("strength_clip", 1.0)],
         {"model": (8, 0, "MODEL"), "clip": (9, 0, "CLIP")}, [("model", "MODEL"), ("clip", "CLIP")],
         {"lora_name": (7, 0, "STRING")}),
    12: ("CLIPTextEncode", "Prompt", (2400, 60), [("text", PROMPT)], {"clip": (11, 1, "CLIP")},
         [("CONDITIONING", "CONDITIONING")], {}),
    13: ("FluxGuidance", "Flux Guidance", (2740, 60), [("guidance", 3.5)], {"conditioning": (12, 0, "CONDITIONING")},
         [("CONDITIONING", "CONDITIONING")], {}),
    14: ("CLIPTextEncode", "Negative (unused at cfg 1)", (2400, 300), [("text", "")], {"clip": (11, 1, "CLIP")},
         [("CONDITIONING", "CONDITIONING")], {}),
    15: ("EmptySD3LatentImage", "Image size", (2400, 500), [("width", 1024), ("height", 1024), ("batch_size", 1)],
         {}, [("LATENT", "LATENT")], {}),
    16: ("KSampler", "Sampler", (3080, 60),
         [("seed", 42), ("control_after_generate", "fixed"), ("steps", 20), ("cfg", 1.0), ("sampler_name", "euler"),
          ("scheduler", "simple"), ("denoise", 1.0)],
         {"model": (11, 0, "MODEL"), "positive": (13, 0, "CONDITIONING"), "negative": (14, 0, "CONDITIONING"),
          "latent_image": (15, 0, "LATENT")}, [("LATENT", "LATENT")], {}),
    17: ("VAEDecode", "Decode", (3420, 60), [], {"samples": (16, 0, "LATENT"), "vae": (10, 0, "VAE")},
         [("IMAGE", "IMAGE")], {}),
    18: ("SaveImage", "Save Image", (3760, 60), [("filename_prefix", "lora_cloud/ohwx")], {"images": (17, 0, "IMAGE")},
         [], {}),
}


def ui_workflow() -> dict:
    links: list[list] = []
    nodes: list[dict] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for nid, (_t, _title, _pos, _w, inputs, _outs, widget_links) in NODES.items():
        for name, (src, slot, typ) in {**inputs, **widget_links}.items():
            lid = len(links) + 1
            inputs_all = list(inputs) + list(widget_links)
            links.append([lid, src, slot, nid, inputs_all.index(name), typ])
            out_links.setdefault((src, slot), []).append(lid)
            in_link[(nid, name)] = lid
    for order, (nid, (typ, title, pos, widgets, inputs, outs, widget_links)) in enumerate(NODES.items()):
        node_inputs = [{"name": n, "type": t, "link": in_link[(nid, n)]} for n, (_s, _sl, t) in inputs.items()]
        node_inputs += [{"name": n, "type": t, "widget": {"name": n}, "link": in_link[(nid, n)]}
                        for n, (_s, _sl, t) in widget_links.items()]
        nodes.append({
            "id": nid, "type": typ, "title": title, "pos": list(pos), "size": [300, 60 + 26 * len(widgets)],
            "flags": {}, "order": order, "mode": 0, "inputs": node_inputs,
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outs)],
            "properties": {"Node name for S&R": typ},
            "widgets_values": [v for _n, v in widgets],
        })
    return {"last_node_id": max(NODES), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"info": "comfy-lora-cloud: photos -> dataset -> Flux LoRA on vast.ai -> image"},
            "version": 0.4}


def api_prompt(overrides: dict[int, dict] | None = None, only: set[int] | None = None) -> dict:
    """The same graph as /prompt takes it; ``overrides`` replace widget values per node id."""
    prompt = {}
    for nid, (typ, _title, _pos, widgets, inputs, _outs, widget_links) in NODES.items():
        if only is not None and nid not in only:
            continue
        values = {n: v for n, v in widgets if n != "control_after_generate"}
        values.update({n: [str(s), sl] for n, (s, sl, _t) in {**inputs, **widget_links}.items()})
        values.update((overrides or {}).get(nid, {}))
        prompt[str(nid)] = {"class_type": typ, "inputs": values}
    return prompt


if __name__ == "__main__":
    OUT.write_text(json.dumps(ui_workflow(), indent=1) + "\n")
    print(f"wrote {OUT}")
