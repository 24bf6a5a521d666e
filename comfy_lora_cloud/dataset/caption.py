"""Captions: Florence-2 (transformers' native classes, detailed-caption task) or BLIP-2, from a
local model folder, batched, on the best available device; then the trigger word is placed the
way the LoRA type wants it:

- character: trigger first, then the caption with the identity words taken out (the trigger has
  to carry who it is; clothes, pose and background stay described);
- style: trigger first, then the content only, without the style words (the style belongs to
  the trigger);
- concept: trigger first, then the caption of the context.

Models load once, on the first batch, with ``local_files_only=True``: no hub access at run time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from ..errors import DatasetError

if TYPE_CHECKING:
    from PIL import Image

Backend = Literal["florence", "blip2"]
DEFAULT_MODELS: dict[str, str] = {
    "florence": "florence-community/Florence-2-base",
    "blip2": "Salesforce/blip2-opt-2.7b",
}
FLORENCE_TASK = "<MORE_DETAILED_CAPTION>"
BLIP2_PROMPT = ""  # unconditional captioning

# Openers that describe the picture instead of its content.
_LEADS = re.compile(
    r"^\s*(?:the image (?:shows|is|depicts|features)|this image (?:shows|is|depicts)|in this image,? (?:we can see|there is|there are)|"
    r"the picture (?:shows|is)|this is|an image of|a picture of|a photo(?:graph)? of|image of)\s+",
    re.IGNORECASE,
)
_IDENTITY = re.compile(
    r"\b(?:(?:a|an|the)\s+)?(?:(?:young|old|older|elderly|middle-aged|teenage|little|adult|smiling|handsome|beautiful|pretty|"
    r"caucasian|asian|african|african-american|black|white|hispanic|latina|latino|blonde|blond|brunette|redheaded|bald|bearded)\s+)*"
    r"(?:man|woman|boy|girl|person|lady|gentleman|guy|child|kid|teenager|male|female|men|women|people)\b",
    re.IGNORECASE,
)
_PRONOUNS = re.compile(r"\b(he|she|him|her|his|hers)\b", re.IGNORECASE)
_NEUTRAL = {"him": "them", "her": "their", "his": "their", "hers": "theirs"}
_STYLE_WORDS = re.compile(
    r"\b(?:(?:a|an|the)\s+)?(?:(?:digital|oil|watercolou?r|acrylic|pencil|charcoal|ink|pastel|3d|anime|cartoon|comic|"
    r"vintage|realistic|photorealistic|abstract|impressionist|surreal|minimalist|black and white|monochrome|colou?rful)\s+)*"
    r"(?:painting|illustration|drawing|sketch|artwork|render(?:ing)?|art|style|photograph|photo|picture|image)\s+(?:of\s+)?",
    re.IGNORECASE,
)


def clean_caption(text: str) -> str:
    """Tidy raw model output: drop task tokens, openers, doubled spaces and trailing spaces."""
    text = re.sub(r"<[^<>\s]+>", " ", text)  # special tokens: </s>, <pad>, <loc_12>, task tags
    text = re.sub(r"\s+", " ", text).strip()
    text = _LEADS.sub("", text)
    text = text.strip(" ,.;:")
    first_word = text.split(" ", 1)[0]
    if len(first_word) > 1 and first_word.isupper():  # an acronym stays as it is
        return text
    return text[:1].lower() + text[1:]


def place_trigger(caption: str, trigger: str | None, lora_type: str) -> str:
    """Apply the preset's caption rule (module docstring). Without a trigger the caption is kept."""
    caption = clean_caption(caption)
    if not trigger:
        return caption
    if lora_type == "character":
        body = _IDENTITY.sub(trigger, caption, count=1)
        body = _IDENTITY.sub("", body)
        body = _PRONOUNS.sub(lambda m: _NEUTRAL.get(m.group(1).lower(), trigger), body)
    elif lora_type == "style":
        body = _STYLE_WORDS.sub("", caption)
    else:
        body = caption
    body = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", body)).strip(" ,.;:")
    if body.lower().startswith(trigger.lower()):
        return body
    return f"{trigger}, {body}" if body else trigger


def pick_device(requested: str = "auto") -> str:
    """``auto``: CUDA if present, then Apple MPS, else CPU."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class Captioner:
    """One captioning model, loaded on the first :meth:`caption` call and kept."""

    backend: Backend
    model_path: str | None = None
    device: str = "auto"
    batch_size: int = 4
    max_new_tokens: int = 96
    num_beams: int = 3
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)
    _dtype: Any = field(default=None, init=False, repr=False)
    loads: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.backend not in DEFAULT_MODELS:
            raise DatasetError(f"unknown caption backend {self.backend!r}; use florence or blip2")

    def _load(self) -> None:
        if self._model is not None:
            return
        source = self.model_path or DEFAULT_MODELS[self.backend]
        if self.model_path is not None and not Path(self.model_path).is_dir():
            raise DatasetError(f"caption model folder {self.model_path} does not exist")
        try:
            import torch
            from transformers import AutoProcessor
        except ImportError as exc:
            raise DatasetError("captioning needs transformers and torch: pip install 'comfy-lora-cloud[caption]'") from exc
        if self.backend == "florence":
            from transformers import Florence2ForConditionalGeneration as ModelClass
        else:
            from transformers import Blip2ForConditionalGeneration as ModelClass
        self._device = pick_device(self.device)
        dtype = torch.float16 if self._device == "cuda" else torch.float32
        try:
            self._processor = AutoProcessor.from_pretrained(source, local_files_only=True)
            model = ModelClass.from_pretrained(source, local_files_only=True, dtype=dtype)
        except OSError as exc:
            raise DatasetError(
                f"caption model {source!r} is not available locally ({str(exc).splitlines()[0]}). "
                f"Download it once with `hf download {DEFAULT_MODELS[self.backend]} --local-dir DIR` and pass "
                "--caption-model DIR"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:  # a folder that is not a whole model (no processor...)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise DatasetError(
                f"caption model folder {source!r} is not a complete {self.backend} model ({first}). It needs the "
                f"model's config, weights, tokenizer and processor files, as `hf download "
                f"{DEFAULT_MODELS[self.backend]} --local-dir DIR` writes them"
            ) from None
        self._model = model.to(self._device).eval()
        self._dtype = dtype
        self.loads += 1

    def caption(self, images: Sequence["Image.Image"]) -> list[str]:
        """Raw captions (cleaned, no trigger) for ``images``, in order, ``batch_size`` at a time."""
        self._load()
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            out += self._florence(batch) if self.backend == "florence" else self._blip2(batch)
        return out

    def _generate(self, inputs: dict[str, Any]) -> Any:
        import torch

        with torch.inference_mode():
            return self._model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=False
            )

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        moved = {}
        for k, v in inputs.items():
            if hasattr(v, "to"):
                v = v.to(self._device)
                if v.is_floating_point():
                    v = v.to(self._dtype)
            moved[k] = v
        return moved

    def _florence(self, batch: list["Image.Image"]) -> list[str]:
        inputs = self._processor(text=[FLORENCE_TASK] * len(batch), images=batch, return_tensors="pt")
        ids = self._generate(self._to_device(inputs))
        texts = self._processor.batch_decode(ids, skip_special_tokens=False)
        captions = []
        for text, im in zip(texts, batch):
            parsed = self._processor.post_process_generation(text, task=FLORENCE_TASK, image_size=im.size)
            captions.append(clean_caption(str(parsed.get(FLORENCE_TASK, ""))))
        return captions

    def _blip2(self, batch: list["Image.Image"]) -> list[str]:
        inputs = self._processor(images=batch, text=[BLIP2_PROMPT] * len(batch), return_tensors="pt")
        ids = self._generate(self._to_device(inputs))
        texts = self._processor.batch_decode(ids, skip_special_tokens=True)
        # Decoder-only BLIP-2 (OPT) echoes the prompt first.
        return [clean_caption(t[len(BLIP2_PROMPT):] if BLIP2_PROMPT and t.startswith(BLIP2_PROMPT) else t) for t in texts]


def existing_caption(image_path: str | os.PathLike[str]) -> str | None:
    """The text of ``<stem>.txt`` next to an image, if it exists and is not blank."""
    p = Path(image_path).with_suffix(".txt")
    if not p.is_file():
        return None
    try:
        text = p.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def caption_all(
    captioner: Captioner | None,
    images: Sequence["Image.Image"],
    existing: Iterable[str | None],
    *,
    trigger: str | None,
    lora_type: str,
    overwrite: bool = False,
) -> list[tuple[str, str]]:
    """(caption, origin) per image: an existing caption unless ``overwrite``; else the model's
    (origin ``"model"``); without a model the trigger alone (origin ``"trigger"``) or ``""``."""
    existing = list(existing)
    todo = [i for i, e in enumerate(existing) if overwrite or not e]
    generated: dict[int, str] = {}
    if captioner is not None and todo:
        for i, text in zip(todo, captioner.caption([images[i] for i in todo])):
            generated[i] = place_trigger(text, trigger, lora_type)
    result = []
    for i, e in enumerate(existing):
        if i in generated:
            result.append((generated[i], "model"))
        elif e and not overwrite:
            # the user's words stay as written; only a missing trigger is put in front, since a
            # caption without it does not teach the LoRA its trigger
            if trigger and trigger.lower() not in e.lower():
                e = f"{trigger}, {e}"
            result.append((e, "existing"))
        elif trigger:
            result.append((trigger, "trigger"))
        else:
            result.append(("", "none"))
    return result
