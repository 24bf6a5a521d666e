"""The six workflow templates: Flux dev (fp8) with one of our LoRAs, by name.

Each template is a function that builds a :class:`~.graph.Graph` from a few parameters (the LoRA,
the prompt, a seed...); called with no arguments it gives the template as shipped (written to
``example_workflows/<name>.json`` by ``example_workflows/build_templates.py``). A note inside
each graph says what to change and which model files go where.

They use core nodes, our pack (the LoRA slot is ``LoraCloudLoraLoader``, which brings a LoRA
from the bucket by name; the prompt list is ``LoraCloudPromptList``) and the packs the
inference image installs (:data:`PACKS`): KJNodes for the labelled grid, controlnet_aux for the
pose, Impact Pack for the tiled detail pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .graph import ALWAYS, BYPASSED, MUTED, Graph, Node, Port

# ---- model files -------------------------------------------------------------------------------
FLUX_UNET = "flux1-dev.safetensors"
FLUX_DTYPE = "fp8_e4m3fn"  # loads the dev weights as fp8: fits a 24 GB GPU with room for the LoRA
CLIP_L = "clip_l.safetensors"
T5XXL = "t5xxl_fp8_e4m3fn.safetensors"
FLUX_VAE = "ae.safetensors"
CONTROLNET = "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors"
UPSCALER = "RealESRGAN_x4plus.pth"

#: (node type, input) -> the ComfyUI models folder (or "input") a value of it names a file in
MODEL_FILES: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LoadImage", "image"): "input",
}
#: where each default file comes from (for the notes)
FILE_SOURCES = {
    FLUX_UNET: "black-forest-labs/FLUX.1-dev (gated: accept the licence first)",
    CLIP_L: "comfyanonymous/flux_text_encoders", T5XXL: "comfyanonymous/flux_text_encoders",
    FLUX_VAE: "black-forest-labs/FLUX.1-dev",
    CONTROLNET: "Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro-2.0 (diffusion_pytorch_model.safetensors, renamed)",
    UPSCALER: "xinntao/Real-ESRGAN releases (RealESRGAN_x4plus.pth)",
}

#: custom node packs a template needs besides ComfyUI's core and this pack
PACKS = {"kjnodes": "ComfyUI-KJNodes", "controlnet_aux": "comfyui_controlnet_aux", "impact": "ComfyUI-Impact-Pack"}

DEFAULT_LORA = "my_lora"
DEFAULT_TRIGGER = "ohwx"
COMPARE_STRENGTHS = (0.0, 0.5, 0.75, 1.0)
COL = 360  # horizontal distance between columns of nodes

_PROMPTS = {
    "character": "photo of {t}, portrait, natural window light, 85mm, sharp focus",
    "style": "a quiet harbour town at dusk, boats and warm windows, in the style of {t}",
    "concept": "a photo of {t} on a wooden table, soft daylight",
}


def default_prompt(trigger: str = DEFAULT_TRIGGER, lora_type: str = "character") -> str:
    """A first prompt for a LoRA: its trigger word in a sentence that suits its type."""
    return _PROMPTS.get(lora_type, _PROMPTS["character"]).format(t=trigger or DEFAULT_TRIGGER)


def split_prompts(text: str, prefix: str = "") -> list[str]:
    """One prompt per line of ``text`` (blank lines and ``#`` comments skipped), each after
    ``prefix`` (e.g. the trigger word): what Prompt List gives the encoder."""
    prefix = prefix.strip()
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(f"{prefix}, {line}" if prefix else line)
    return out


# ---- shared pieces -----------------------------------------------------------------------------
@dataclass
class Flux:
    """The loaders and the LoRA: what every template starts with."""

    unet: Node
    clip: Node
    vae: Node
    lora: Node

    @property
    def model(self) -> Port:
        return self.lora.out(0)

    @property
    def text_encoder(self) -> Port:
        return self.lora.out(1)


def _flux(g: Graph, lora: str, strength: float, x: float = 20, y: float = 320) -> Flux:
    unet = g.add("UNETLoader", "Load Flux dev (fp8)", (x, y), outputs=[("MODEL", "MODEL")],
                 widgets=[("unet_name", FLUX_UNET), ("weight_dtype", FLUX_DTYPE)])
    clip = g.add("DualCLIPLoader", "Load CLIP-L + T5-XXL", (x, y + 150), outputs=[("CLIP", "CLIP")],
                 widgets=[("clip_name1", CLIP_L), ("clip_name2", T5XXL), ("type", "flux"), ("device", "default")])
    vae = g.add("VAELoader", "Load Flux VAE", (x, y + 340), outputs=[("VAE", "VAE")],
                widgets=[("vae_name", FLUX_VAE)])
    lora_node = _lora(g, "Your LoRA (by name, from the bucket)", (x + COL, y), unet.out(), clip.out(), lora, strength)
    return Flux(unet, clip, vae, lora_node)


def _lora(g: Graph, title: str, pos: tuple[float, float], model: Port, clip: Port | None, lora: str,
          strength: float, mode: int = ALWAYS) -> Node:
    return g.add("LoraCloudLoraLoader", title, pos, mode=mode,
                 sockets=[("model", "MODEL", model), ("clip", "CLIP", clip)],
                 widgets=[("lora_name", lora), ("strength_model", strength), ("strength_clip", strength)],
                 outputs=[("model", "MODEL"), ("clip", "CLIP")])


def _encode(g: Graph, title: str, pos: tuple[float, float], clip: Port, text: str) -> Node:
    return g.add("CLIPTextEncode", title, pos, sockets=[("clip", "CLIP", clip)], widgets=[("text", text)],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=(400, 200))


def _conditioning(g: Graph, clip: Port, prompt: str, x: float, y: float,
                  guidance: float = 3.5) -> tuple[Node, Node]:
    """(positive with Flux guidance, empty negative: unused at cfg 1, the sampler needs one)."""
    pos = _encode(g, "Prompt", (x, y), clip, prompt)
    guided = g.add("FluxGuidance", "Flux guidance", (x + 440, y), sockets=[("conditioning", "CONDITIONING", pos.out())],
                   widgets=[("guidance", guidance)], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", "Negative (unused at cfg 1)", (x, y + 240), sockets=[("clip", "CLIP", clip)],
                widgets=[("text", "")], outputs=[("CONDITIONING", "CONDITIONING")], size=(400, 120))
    return guided, neg


def _latent(g: Graph, pos: tuple[float, float], width: int, height: int, batch: int = 1) -> Node:
    return g.add("EmptySD3LatentImage", "Image size", pos, outputs=[("LATENT", "LATENT")],
                 widgets=[("width", width), ("height", height), ("batch_size", batch)])


def _sampler(g: Graph, title: str, pos: tuple[float, float], model: Port, positive: Port, negative: Port,
             latent: Port, seed: int, steps: int, denoise: float = 1.0, mode: int = ALWAYS) -> Node:
    return g.add("KSampler", title, pos, mode=mode,
                 sockets=[("model", "MODEL", model), ("positive", "CONDITIONING", positive),
                          ("negative", "CONDITIONING", negative), ("latent_image", "LATENT", latent)],
                 widgets=[("seed", seed), ("steps", steps), ("cfg", 1.0), ("sampler_name", "euler"),
                          ("scheduler", "simple"), ("denoise", denoise)],
                 outputs=[("LATENT", "LATENT")])


def _decode(g: Graph, pos: tuple[float, float], samples: Port, vae: Port, mode: int = ALWAYS) -> Node:
    return g.add("VAEDecode", "Decode", pos, mode=mode, sockets=[("samples", "LATENT", samples), ("vae", "VAE", vae)],
                 outputs=[("IMAGE", "IMAGE")])


def _save(g: Graph, pos: tuple[float, float], images: Port, prefix: str, title: str = "Save image") -> Node:
    return g.add("SaveImage", title, pos, sockets=[("images", "IMAGE", images)],
                 widgets=[("filename_prefix", prefix)], size=(420, 460))


def _load_image(g: Graph, title: str, pos: tuple[float, float], image: str) -> Node:
    return g.add("LoadImage", title, pos, widgets=[("image", image), ("upload", "image")],
                 outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], size=(320, 360))


def _files_note(*extra: str) -> str:
    files = [(FLUX_UNET, "diffusion_models"), (CLIP_L, "text_encoders"), (T5XXL, "text_encoders"),
             (FLUX_VAE, "vae"), *[tuple(e.split("|")) for e in extra]]
    return "\n".join(f"- `models/{folder}/{name}` ({FILE_SOURCES.get(name, '')})" for name, folder in files)


_LORA_NOTE = ("**Your LoRA**: type its name (as `lora-cloud lora list` shows it) in *Your LoRA*; it is "
              "downloaded from your bucket into `models/loras/lora_cloud/` the first time. Put its trigger "
              "word in the prompt.")


# ---- the six -----------------------------------------------------------------------------------
def basic_txt2img(lora: str = DEFAULT_LORA, prompt: str | None = None, trigger: str = DEFAULT_TRIGGER,
                  strength: float = 1.0, seed: int = 42, steps: int = 20, width: int = 1024, height: int = 1024,
                  filename_prefix: str = "lora_cloud/basic") -> Graph:
    g = Graph("basic_txt2img", "a prompt -> an image, with one LoRA and its trigger word")
    g.note("## Prompt -> image with your LoRA\n\n" + _LORA_NOTE + " Strength 1.0 is the LoRA as trained; "
           "lower it (0.6-0.8) when it overpowers the prompt.\n\nFlux dev wants cfg 1 and Flux guidance "
           "about 3.5; 20 steps are enough for a first look.\n\n**Files:**\n" + _files_note(), (20, 20),
           size=(700, 260))
    f = _flux(g, lora, strength)
    pos, neg = _conditioning(g, f.text_encoder, prompt or default_prompt(trigger), 2 * COL + 20, 320)
    latent = _latent(g, (2 * COL + 20, 820), width, height)
    ks = _sampler(g, "Sampler", (3 * COL + 120, 560), f.model, pos.out(), neg.out(), latent.out(), seed, steps)
    dec = _decode(g, (4 * COL + 120, 560), ks.out(), f.vae.out())
    _save(g, (5 * COL + 80, 320), dec.out(), filename_prefix)
    return g


def lora_comparison(lora: str = DEFAULT_LORA, lora_b: str | None = None, prompt: str | None = None,
                    trigger: str = DEFAULT_TRIGGER, strengths: Sequence[float] = COMPARE_STRENGTHS, seed: int = 42,
                    steps: int = 20, width: int = 1024, height: int = 1024,
                    filename_prefix: str = "lora_cloud/compare") -> Graph:
    strengths = [float(s) for s in strengths]
    if not 2 <= len(strengths) <= 8:
        raise ValueError("compare 2 to 8 strengths")
    g = Graph("lora_comparison", "one seed and prompt at several LoRA strengths, side by side in a labelled grid")
    g.note("## Compare LoRA strengths\n\nThe same seed and prompt at strengths "
           + ", ".join(f"{s:g}" for s in strengths) + " (0 is Flux without the LoRA), labelled and laid side by "
           "side in one image.\n\n" + _LORA_NOTE + "\n\n**A second LoRA**: type its name in every *LoRA B* "
           "loader, select the group *LoRA B* and unmute it (Ctrl+M), then select *Stack rows* and "
           "un-bypass it (Ctrl+B): LoRA B becomes a second row under the first.\n\nLabels and the grid "
           "come from **ComfyUI-KJNodes** (Add Label, Image Concatenate Multi).\n\n**Files:**\n" + _files_note(),
           (20, 20), size=(700, 330))
    unet = g.add("UNETLoader", "Load Flux dev (fp8)", (20, 400), outputs=[("MODEL", "MODEL")],
                 widgets=[("unet_name", FLUX_UNET), ("weight_dtype", FLUX_DTYPE)])
    clip = g.add("DualCLIPLoader", "Load CLIP-L + T5-XXL", (20, 550), outputs=[("CLIP", "CLIP")],
                 widgets=[("clip_name1", CLIP_L), ("clip_name2", T5XXL), ("type", "flux"), ("device", "default")])
    vae = g.add("VAELoader", "Load Flux VAE", (20, 740), outputs=[("VAE", "VAE")], widgets=[("vae_name", FLUX_VAE)])
    # our LoRAs train the diffusion model only (network_train_unet_only), so one prompt encoding
    # serves every column: only the model changes with the strength
    pos, neg = _conditioning(g, clip.out(), prompt or default_prompt(trigger), 20, 900)
    latent = _latent(g, (20, 1400), width, height)
    rows: list[Node] = []
    for r, (name, label, mode) in enumerate([(lora, "A", ALWAYS),
                                             (lora_b or "my_other_lora", "B", ALWAYS if lora_b else MUTED)]):
        y0 = 400 + r * 1500
        row_nodes, labelled = [], []
        for c, s in enumerate(strengths):
            x = 2 * COL + 160 + c * COL
            ld = _lora(g, f"LoRA {label} at {s:g}", (x, y0), unet.out(), None, name, s, mode=mode)
            ks = _sampler(g, f"Sampler {label} {s:g}", (x, y0 + 200), ld.out(0), pos.out(), neg.out(), latent.out(),
                          seed, steps, mode=mode)
            dec = _decode(g, (x, y0 + 520), ks.out(), vae.out(), mode=mode)
            text = f"{name} @ {s:g}" if (lora_b or r) else (f"strength {s:g}" if s else "strength 0 (no LoRA)")
            lab = g.add("AddLabel", f"Label {label} {s:g}", (x, y0 + 640), mode=mode,
                        sockets=[("image", "IMAGE", dec.out()), ("caption", "STRING", None)],
                        widgets=[("text_x", 10), ("text_y", 2), ("height", 48), ("font_size", 32),
                                 ("font_color", "white"), ("label_color", "black"), ("font", "FreeMono.ttf"),
                                 ("text", text), ("direction", "up")],
                        outputs=[("IMAGE", "IMAGE")])
            row_nodes += [ld, ks, dec, lab]
            labelled.append(lab)
        grid = g.add("ImageConcatMulti", f"Row {label}: side by side", (2 * COL + 160 + len(strengths) * COL, y0 + 640),
                     mode=mode,
                     sockets=[(f"image_{i + 1}", "IMAGE", n.out()) for i, n in enumerate(labelled)],
                     widgets=[("inputcount", len(labelled)), ("direction", "right"), ("match_image_size", False)],
                     outputs=[("images", "IMAGE")])
        row_nodes.append(grid)
        g.group(f"LoRA {label}" + ("" if mode == ALWAYS else " (muted: unmute to compare a second LoRA)"), row_nodes,
                color="#3f789e" if r == 0 else "#8a5a8a")
        rows.append(grid)
    stack = g.add("ImageConcatMulti", "Stack rows (bypassed: one LoRA)", (2 * COL + 160 + (len(strengths) + 1) * COL, 1040),
                  mode=ALWAYS if lora_b else BYPASSED,
                  sockets=[("image_1", "IMAGE", rows[0].out()), ("image_2", "IMAGE", rows[1].out())],
                  widgets=[("inputcount", 2), ("direction", "down"), ("match_image_size", False)],
                  outputs=[("images", "IMAGE")])
    _save(g, (2 * COL + 160 + (len(strengths) + 2) * COL, 400), stack.out(), filename_prefix, "Save the grid")
    return g


def img2img_refine(lora: str = DEFAULT_LORA, image: str = "example.png", prompt: str | None = None,
                   trigger: str = DEFAULT_TRIGGER, strength: float = 1.0, denoise: float = 0.55, seed: int = 42,
                   steps: int = 20, megapixels: float = 1.0, filename_prefix: str = "lora_cloud/refine") -> Graph:
    g = Graph("img2img_refine", "an input image refined with the LoRA at a chosen denoise")
    g.note("## Refine an image with your LoRA\n\nLoad an image (drag it onto *Input image*); it is scaled to "
           "about 1 megapixel, encoded, and re-sampled with the LoRA.\n\n**Denoise** on the sampler says how "
           "much changes: 0.3 keeps the composition and retouches, 0.55 (default) re-draws details in the "
           "LoRA's look, 0.75+ keeps little more than the layout.\n\n" + _LORA_NOTE + "\n\n**Files:**\n"
           + _files_note(), (20, 20), size=(700, 300))
    f = _flux(g, lora, strength, y=360)
    src = _load_image(g, "Input image", (2 * COL + 20, 900), image)
    scaled = g.add("ImageScaleToTotalPixels", "Scale to ~1 MP", (3 * COL + 20, 900),
                   sockets=[("image", "IMAGE", src.out())],
                   widgets=[("upscale_method", "lanczos"), ("megapixels", megapixels)], outputs=[("IMAGE", "IMAGE")])
    enc = g.add("VAEEncode", "Encode", (4 * COL + 20, 900),
                sockets=[("pixels", "IMAGE", scaled.out()), ("vae", "VAE", f.vae.out())], outputs=[("LATENT", "LATENT")])
    pos, neg = _conditioning(g, f.text_encoder, prompt or default_prompt(trigger), 2 * COL + 20, 360)
    ks = _sampler(g, "Sampler (set denoise here)", (4 * COL + 120, 360), f.model, pos.out(), neg.out(), enc.out(),
                  seed, steps, denoise=denoise)
    dec = _decode(g, (5 * COL + 120, 360), ks.out(), f.vae.out())
    _save(g, (6 * COL + 80, 360), dec.out(), filename_prefix)
    return g


def batch_generation(lora: str = DEFAULT_LORA, prompts: Sequence[str] | None = None, trigger: str = DEFAULT_TRIGGER,
                     strength: float = 1.0, variations: int = 4, seed: int = 42, steps: int = 20, width: int = 1024,
                     height: int = 1024, filename_prefix: str = "lora_cloud/batch") -> Graph:
    prompts = list(prompts) if prompts is not None else [
        "portrait, natural window light", "walking in a rainy city street at night, neon reflections",
        "as an astronaut on the moon, film grain", "oil painting, seated in a garden"]
    g = Graph("batch_generation", "N variations (seeds) of each prompt in a list")
    g.note("## Many images at once\n\nWrite one prompt per line in *Prompt list* (lines starting with `#` are "
           "skipped); the trigger word in *prefix* goes before each. Every prompt is rendered "
           "*batch_size* times (on *Image size*) with different noise from one seed: prompts x variations "
           "images.\n\nTo reproduce one image later, keep the seed and pick it from the batch with "
           "*Latent From Batch*.\n\n" + _LORA_NOTE + "\n\n**Files:**\n" + _files_note(), (20, 20), size=(700, 320))
    f = _flux(g, lora, strength, y=380)
    plist = g.add("LoraCloudPromptList", "Prompt list (one per line)", (2 * COL + 20, 380),
                  widgets=[("text", "\n".join(prompts)), ("prefix", trigger)], outputs=[("prompts", "STRING")],
                  size=(420, 260))
    enc = g.add("CLIPTextEncode", "Prompt (one per line of the list)", (3 * COL + 120, 380),
                sockets=[("clip", "CLIP", f.text_encoder)], links={"text": plist.out()}, widgets=[("text", "")],
                outputs=[("CONDITIONING", "CONDITIONING")], size=(320, 120))
    guided = g.add("FluxGuidance", "Flux guidance", (4 * COL + 120, 380),
                   sockets=[("conditioning", "CONDITIONING", enc.out())], widgets=[("guidance", 3.5)],
                   outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", "Negative (unused at cfg 1)", (2 * COL + 20, 700),
                sockets=[("clip", "CLIP", f.text_encoder)], widgets=[("text", "")],
                outputs=[("CONDITIONING", "CONDITIONING")], size=(400, 120))
    latent = _latent(g, (2 * COL + 20, 880), width, height, batch=variations)
    ks = _sampler(g, "Sampler", (5 * COL + 120, 380), f.model, guided.out(), neg.out(), latent.out(), seed, steps)
    dec = _decode(g, (6 * COL + 120, 380), ks.out(), f.vae.out())
    _save(g, (7 * COL + 80, 380), dec.out(), filename_prefix)
    return g


def controlnet_pose(lora: str = DEFAULT_LORA, image: str = "example.png", prompt: str | None = None,
                    trigger: str = DEFAULT_TRIGGER, strength: float = 1.0, control_strength: float = 0.7,
                    control_end: float = 0.6, seed: int = 42, steps: int = 20, width: int = 1024, height: int = 1024,
                    filename_prefix: str = "lora_cloud/pose") -> Graph:
    g = Graph("controlnet_pose", "the pose of a reference image guiding a Flux ControlNet, for characters")
    g.note("## Your character in a pose taken from a photo\n\nLoad a reference photo in *Pose reference*; "
           "DWPose (**comfyui_controlnet_aux**) draws its skeleton (shown in *Pose*), and a Flux ControlNet "
           "holds the render to it while your LoRA gives the face and look.\n\n- *control strength* 0.5-0.8 "
           "and *end percent* 0.5-0.7: higher follows the pose more tightly and costs detail.\n- Set *Image "
           "size* to the reference's aspect ratio.\n- The DWPose models download on first use (into "
           "controlnet_aux's ckpts folder).\n\n" + _LORA_NOTE + "\n\n**Files:**\n"
           + _files_note(f"{CONTROLNET}|controlnet"), (20, 20), size=(720, 360))
    f = _flux(g, lora, strength, y=420)
    src = _load_image(g, "Pose reference", (20, 980), image)
    pose = g.add("DWPreprocessor", "Pose (DWPose)", (COL + 20, 980), sockets=[("image", "IMAGE", src.out())],
                 widgets=[("detect_hand", "enable"), ("detect_body", "enable"), ("detect_face", "enable"),
                          ("resolution", 1024), ("bbox_detector", "yolox_l.torchscript.pt"),
                          ("pose_estimator", "dw-ll_ucoco_384_bs5.torchscript.pt"),
                          ("scale_stick_for_xinsr_cn", "disable")],
                 outputs=[("IMAGE", "IMAGE"), ("POSE_KEYPOINT", "POSE_KEYPOINT")])
    g.add("PreviewImage", "Pose", (2 * COL + 20, 1180), sockets=[("images", "IMAGE", pose.out())], size=(320, 320))
    cn = g.add("ControlNetLoader", "Load Flux ControlNet (union)", (2 * COL + 20, 980),
               widgets=[("control_net_name", CONTROLNET)], outputs=[("CONTROL_NET", "CONTROL_NET")])
    pos, neg = _conditioning(g, f.text_encoder, prompt or default_prompt(trigger), 2 * COL + 20, 420)
    apply = g.add("ControlNetApplyAdvanced", "Apply the pose", (4 * COL + 120, 420),
                  sockets=[("positive", "CONDITIONING", pos.out()), ("negative", "CONDITIONING", neg.out()),
                           ("control_net", "CONTROL_NET", cn.out()), ("image", "IMAGE", pose.out()),
                           ("vae", "VAE", f.vae.out())],
                  widgets=[("strength", control_strength), ("start_percent", 0.0), ("end_percent", control_end)],
                  outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING")])
    latent = _latent(g, (3 * COL + 120, 1180), width, height)
    ks = _sampler(g, "Sampler", (5 * COL + 120, 420), f.model, apply.out(0), apply.out(1), latent.out(), seed, steps)
    dec = _decode(g, (6 * COL + 120, 420), ks.out(), f.vae.out())
    _save(g, (7 * COL + 80, 420), dec.out(), filename_prefix)
    return g


def upscale_4x(lora: str = DEFAULT_LORA, image: str = "example.png", prompt: str | None = None,
               trigger: str = DEFAULT_TRIGGER, strength: float = 0.8, denoise: float = 0.3, tile: int = 1024,
               seed: int = 42, steps: int = 20, filename_prefix: str = "lora_cloud/upscale") -> Graph:
    g = Graph("upscale_4x", "a 4x model upscale followed by a tiled detail pass with the LoRA")
    g.note("## 4x upscale, then a tiled detail pass\n\n1. *Upscale 4x* enlarges the image with an ESRGAN "
           "model (the plain result is shown in *4x, before the detail pass*).\n2. **Impact Pack**'s *Make Tile "
           "SEGS* cuts it into overlapping tiles of *bbox_size* pixels and *Detailer* re-samples each tile "
           "with Flux and your LoRA at a low *denoise* (0.2-0.35: more invents detail, and seams).\n\nA 1024 px "
           "image becomes 4096 px: 16+ tiles, several minutes on a 24 GB GPU. Describe the image in the prompt "
           "(with the trigger word if the subject is your LoRA's).\n\n" + _LORA_NOTE + "\n\n**Files:**\n"
           + _files_note(f"{UPSCALER}|upscale_models"), (20, 20), size=(720, 380))
    f = _flux(g, lora, strength, y=440)
    src = _load_image(g, "Image to upscale", (20, 1000), image)
    up_model = g.add("UpscaleModelLoader", "Load upscale model", (COL + 20, 1000),
                     widgets=[("model_name", UPSCALER)], outputs=[("UPSCALE_MODEL", "UPSCALE_MODEL")])
    up = g.add("ImageUpscaleWithModel", "Upscale 4x", (2 * COL + 20, 1000),
               sockets=[("upscale_model", "UPSCALE_MODEL", up_model.out()), ("image", "IMAGE", src.out())],
               outputs=[("IMAGE", "IMAGE")])
    g.add("PreviewImage", "4x, before the detail pass", (3 * COL + 20, 1000), sockets=[("images", "IMAGE", up.out())],
          size=(320, 320))
    tiles = g.add("ImpactMakeTileSEGS", "Make Tile SEGS", (3 * COL + 20, 1360),
                  sockets=[("images", "IMAGE", up.out()), ("filter_in_segs_opt", "SEGS", None),
                           ("filter_out_segs_opt", "SEGS", None)],
                  widgets=[("bbox_size", tile), ("crop_factor", 1.5), ("min_overlap", 128),
                           ("filter_segs_dilation", 20), ("mask_irregularity", 0.0),
                           ("irregular_mask_mode", "Reuse fast")],
                  outputs=[("SEGS", "SEGS")])
    pos, neg = _conditioning(g, f.text_encoder, prompt or default_prompt(trigger), 2 * COL + 20, 440)
    detail = g.add("DetailerForEach", "Detailer (tiled detail pass)", (4 * COL + 120, 440),
                   sockets=[("image", "IMAGE", up.out()), ("segs", "SEGS", tiles.out()), ("model", "MODEL", f.model),
                            ("clip", "CLIP", f.text_encoder), ("vae", "VAE", f.vae.out()),
                            ("positive", "CONDITIONING", pos.out()), ("negative", "CONDITIONING", neg.out()),
                            ("detailer_hook", "DETAILER_HOOK", None), ("scheduler_func_opt", "SCHEDULER_FUNC", None)],
                   widgets=[("guide_size", float(tile)), ("guide_size_for", True), ("max_size", float(tile)),
                            ("seed", seed), ("steps", steps), ("cfg", 1.0), ("sampler_name", "euler"),
                            ("scheduler", "simple"), ("denoise", denoise), ("feather", 16), ("noise_mask", True),
                            ("force_inpaint", True), ("wildcard", ""), ("cycle", 1), ("inpaint_model", False),
                            ("noise_mask_feather", 20)],
                   outputs=[("image", "IMAGE")], size=(360, 720))
    _save(g, (5 * COL + 160, 440), detail.out(), filename_prefix)
    return g


# ---- the catalogue -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    name: str
    title: str
    build: Callable[..., Graph]
    packs: tuple[str, ...] = ()
    takes_image: bool = False

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.build).parameters)

    @property
    def description(self) -> str:
        return self.build().description

    def graph(self, **params: Any) -> Graph:
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise ValueError(f"template {self.name} takes no {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(self.parameters)}")
        return self.build(**params)


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("basic_txt2img", "Prompt -> image with a LoRA", basic_txt2img),
    Template("lora_comparison", "Compare LoRA strengths", lora_comparison, packs=(PACKS["kjnodes"],)),
    Template("img2img_refine", "Refine an image with a LoRA", img2img_refine, takes_image=True),
    Template("batch_generation", "Batch: prompts x variations", batch_generation),
    Template("controlnet_pose", "Pose from a reference (ControlNet)", controlnet_pose,
             packs=(PACKS["controlnet_aux"],), takes_image=True),
    Template("upscale_4x", "4x upscale + tiled detail pass", upscale_4x, packs=(PACKS["impact"],), takes_image=True),
)}
NAMES = tuple(TEMPLATES)
