"""The pack's nodes (ComfyUI V3 API).

Each node is a thin shell over the pack's one :class:`App` (``comfy/wiring.py``, shared with the
routes and the background loop): the training nodes call its nouns (``app.runs``, ``app.library``)
as the CLI and the routes do, the dataset nodes its image-folder steps
(:mod:`comfy_lora_cloud.service.graph`). A node reads its inputs,
hands ComfyUI's progress bar and interrupt flag to the step as plain callables, runs blocking
work in a thread and lets a :class:`LoraCloudError` propagate so ComfyUI shows its message.
No node takes a secret as an input: keys live in the lora-cloud home (``lora-cloud config``).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from comfy_api.latest import io

from ..errors import ConfigError
from ..service import graph
from . import node_runs
from ..service.money import gpu_choices
from .node_plumbing import CATEGORY, app_parts, interrupted, progress_bar
from .wiring import holder

IMAGES = io.Custom("LORA_CLOUD_IMAGES")
DATASET = io.Custom("LORA_CLOUD_DATASET")
RUN = io.Custom("LORA_CLOUD_RUN")
LORA_TYPES = ["character", "style", "concept"]
CROPS = ["auto", "face", "object", "center", "none"]


def _check(value: str, options: list[str], what: str) -> str:
    if value not in options:  # V3 combos are not validated by ComfyUI itself
        raise ConfigError(f"{what} must be one of {', '.join(options)}, not {value!r}")
    return value


# ---- dataset ---------------------------------------------------------------------------------
class LoraCloudLoadImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudLoadImages",
            display_name="LoRA Cloud: Load Images",
            category=f"{CATEGORY}/dataset",
            description="A folder of photos to train on: any folder on this machine, a folder inside "
                        "ComfyUI's input folder, or a dataset already in your bucket. The photos are only read.",
            inputs=[
                io.Combo.Input("source", options=["folder", "input", "dataset"], default="input",
                               tooltip="folder: a path on this machine; input: a subfolder of ComfyUI's input "
                                       "folder; dataset: a dataset name in your bucket."),
                io.String.Input("path", default="", tooltip="The folder path, the input subfolder, or the "
                                                            "dataset name."),
            ],
            outputs=[IMAGES.Output(display_name="images"), io.String.Output(display_name="summary")],
        )

    @classmethod
    def fingerprint_inputs(cls, source: str, path: str) -> str:
        try:  # re-run only when the photos changed
            if source == "folder":
                return graph.folder_fingerprint(Path(path).expanduser())
            if source == "input":
                import folder_paths

                return graph.folder_fingerprint(Path(folder_paths.get_input_directory()) / path)
        except OSError:
            pass
        return str(math.nan)

    @classmethod
    async def execute(cls, source: str, path: str) -> io.NodeOutput:
        _check(source, ["folder", "input", "dataset"], "source")
        input_dir = None
        if source == "input":
            import folder_paths

            input_dir = folder_paths.get_input_directory()
        app, storage, work = await app_parts()
        images = await asyncio.to_thread(graph.load_images, source, path, storage=storage, work=work,
                                         input_dir=input_dir, transfers=app.offload)
        return io.NodeOutput(images, f"{images.count} images in {images.folder}")


class LoraCloudCropForTraining(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudCropForTraining",
            display_name="LoRA Cloud: Crop for Training",
            category=f"{CATEGORY}/dataset",
            description="Crop each photo for the LoRA type (faces for a character, the subject for a concept, "
                        "the whole picture for a style) and fit it to kohya's aspect-ratio buckets.",
            inputs=[
                IMAGES.Input("images", tooltip="Photos from Load Images."),
                io.Combo.Input("lora_type", options=LORA_TYPES, default="character",
                               tooltip="What the LoRA learns: a person (character), a look (style) or a thing "
                                       "(concept). Decides the crop and the training preset."),
                io.Combo.Input("crop", options=CROPS, default="auto",
                               tooltip="auto: by LoRA type. face: the largest face, widened to head and "
                                       "shoulders. object: the salient subject. center / none."),
                io.Int.Input("resolution", default=1024, min=256, max=2048, step=64,
                             tooltip="Training resolution (bucket size); Flux LoRAs train well at 1024."),
                io.String.Input("trigger", default="", tooltip="Trigger word, recorded with the dataset."),
            ],
            outputs=[IMAGES.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, images, lora_type: str, crop: str, resolution: int, trigger: str) -> io.NodeOutput:
        _check(lora_type, LORA_TYPES, "lora_type")
        _check(crop, CROPS, "crop")
        _, _, work = await app_parts()
        out = await asyncio.to_thread(graph.crop_for_training, images, lora_type=lora_type, crop=crop,
                                      resolution=resolution, trigger=trigger.strip() or None, work=work,
                                      progress=progress_bar(cls.hidden.unique_id))
        return io.NodeOutput(out)


class LoraCloudRemoveBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudRemoveBackground",
            display_name="LoRA Cloud: Remove Background",
            category=f"{CATEGORY}/dataset",
            description="Replace each photo's background with white (rembg), so the LoRA learns the subject, "
                        "not the room. Needs the rembg model on this machine.",
            inputs=[
                IMAGES.Input("images", tooltip="Photos from Load Images or Crop for Training."),
                io.Combo.Input("lora_type", options=LORA_TYPES, default="concept",
                               tooltip="The LoRA type (kept with the dataset)."),
                io.String.Input("model_path", default="", tooltip="A rembg .onnx model file; empty: rembg's "
                                                                  "usual folders (~/.u2net)."),
            ],
            outputs=[IMAGES.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, images, lora_type: str, model_path: str) -> io.NodeOutput:
        _check(lora_type, LORA_TYPES, "lora_type")
        app, _storage, work = await app_parts()
        out = await asyncio.to_thread(
            graph.crop_for_training, images, lora_type=lora_type, crop="none", trigger=images.trigger,
            resolution=images.resolution or 1024, work=work, remove_background=True,
            background_model=model_path.strip() or app.settings.rembg_model_path,
            progress=progress_bar(cls.hidden.unique_id))
        return io.NodeOutput(out)


class LoraCloudCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudCaption",
            display_name="LoRA Cloud: Caption",
            category=f"{CATEGORY}/dataset",
            description="Write a caption for each photo with Florence-2 or BLIP-2 on this ComfyUI's device, "
                        "with the trigger word placed as the LoRA type wants. Existing captions are kept.",
            inputs=[
                IMAGES.Input("images", tooltip="Photos from Crop for Training."),
                io.Combo.Input("model", options=["florence", "blip2", "none"], default="florence",
                               tooltip="florence: Florence-2 detailed captions; blip2: BLIP-2; none: the "
                                       "trigger word alone."),
                io.String.Input("model_path", default="",
                                tooltip="A local model folder (e.g. models/florence2/Florence-2-base); empty: "
                                        "the caption_model_path setting, else the Hugging Face cache."),
                io.String.Input("trigger", default="", tooltip="Trigger word placed in every caption; empty: "
                                                               "the one from Crop for Training."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace captions that already exist."),
            ],
            outputs=[IMAGES.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, images, model: str, model_path: str, trigger: str, overwrite: bool) -> io.NodeOutput:
        _check(model, ["florence", "blip2", "none"], "model")
        app, _storage, work = await app_parts()
        out = await asyncio.to_thread(
            graph.caption_images, images, model=model,
            model_path=model_path.strip() or app.settings.caption_model_path, trigger=trigger.strip() or None,
            overwrite=overwrite, work=work, progress=progress_bar(cls.hidden.unique_id))
        return io.NodeOutput(out)


class LoraCloudPreviewDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudPreviewDataset",
            display_name="LoRA Cloud: Preview Dataset",
            category=f"{CATEGORY}/dataset",
            description="Show the prepared images with their captions.",
            inputs=[IMAGES.Input("images", tooltip="Images to show (the first 16).")],
            outputs=[IMAGES.Output(display_name="images")],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, images) -> io.NodeOutput:
        import folder_paths

        temp = Path(folder_paths.get_temp_directory())
        shown, texts = await asyncio.to_thread(_write_previews, images, temp)
        return io.NodeOutput(images, ui={"images": shown, "text": texts})


def _write_previews(images: graph.ImageSet, temp: Path) -> tuple[list[dict[str, str]], list[str]]:
    from PIL import Image

    sub = "lora_cloud_preview"
    (temp / sub).mkdir(parents=True, exist_ok=True)
    shown, texts = [], []
    for i, (path, caption) in enumerate(graph.preview(images)):
        name = f"{images.digest}_{i:02d}.jpg"
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((384, 384))
            im.save(temp / sub / name, quality=85)
        shown.append({"filename": name, "subfolder": sub, "type": "temp"})
        texts.append(f"{path.name}: {caption}")  # plain text; ComfyUI shows it as text
    return shown, texts


class LoraCloudSaveDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudSaveDataset",
            display_name="LoRA Cloud: Save Dataset",
            category=f"{CATEGORY}/dataset",
            description="Upload the prepared images and captions to your bucket as datasets/<name>/. Saving "
                        "the same images again moves nothing.",
            inputs=[
                IMAGES.Input("images", tooltip="Prepared images (after Crop for Training / Caption)."),
                io.String.Input("name", default="my_lora_dataset",
                                tooltip="Dataset name: letters, digits, '.', '_', '-' and spaces."),
                io.Boolean.Input("replace", default=True,
                                 tooltip="Replace an existing dataset of that name (files it lacks are removed)."),
                io.Boolean.Input("force", default=False, optional=True,
                                 tooltip="Replace it even while a live run trains on it. Risky: that run's "
                                         "trainer may then train on a mix of old and new images, or resume on "
                                         "other images than it started with."),
            ],
            outputs=[DATASET.Output(display_name="dataset"), io.String.Output(display_name="summary")],
            is_output_node=True,
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, images, name: str, replace: bool, force: bool = False) -> io.NodeOutput:
        app, _storage, _work = await app_parts()
        ref = await graph.save_dataset(images, name, library=app.library, replace_existing=replace, force=force,
                                       progress=progress_bar(cls.hidden.unique_id))
        summary = f"dataset {ref.name}: {ref.images} images, {ref.captioned} captioned, in {ref.storage_url}"
        return io.NodeOutput(ref, summary, ui={"text": [summary]})


class LoraCloudLoadDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudLoadDataset",
            display_name="LoRA Cloud: Load Dataset",
            category=f"{CATEGORY}/dataset",
            description="A dataset already in your bucket, by name, to train on without preparing it again.",
            inputs=[
                io.String.Input("dataset", default="",
                                tooltip="Name of a dataset in storage (datasets/<name>/), e.g. one made with "
                                        "Save Dataset or `lora-cloud dataset upload DIR --name NAME`."),
            ],
            outputs=[DATASET.Output(display_name="dataset"), io.String.Output(display_name="summary")],
        )

    @classmethod
    def fingerprint_inputs(cls, dataset: str) -> str:
        try:  # one listing: re-run when the dataset's files change
            objs = holder.get_blocking().storage.list(f"datasets/{dataset.strip()}/").objects
            return graph.digest(sorted((o.key, o.md5) for o in objs))
        except Exception:
            return str(math.nan)

    @classmethod
    async def execute(cls, dataset: str) -> io.NodeOutput:
        app, storage, _work = await app_parts()
        d = await app.library.require_trainable(dataset.strip())  # complete, with images
        ref = graph.DatasetRef(d.name, storage.url, d.images, d.captioned, d.trigger, d.lora_type)
        return io.NodeOutput(ref, f"{d.name}: {d.images} images, {d.captioned} captioned ({storage.url})")


# ---- training --------------------------------------------------------------------------------
def _gpu_options() -> list[str]:
    return gpu_choices()


class LoraCloudLaunchTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudLaunchTrainer",
            display_name="LoRA Cloud: Launch vast.ai Trainer",
            category=f"{CATEGORY}/training",
            description="Rent a GPU on vast.ai and train a Flux LoRA on the dataset. Returns as soon as the run "
                        "is launched; the run goes on without ComfyUI. Queueing the same graph again re-attaches "
                        "to the run instead of renting a second machine.",
            inputs=[
                DATASET.Input("dataset", tooltip="From Save Dataset or Load Dataset."),
                io.Combo.Input("lora_type", options=LORA_TYPES, default="character",
                               tooltip="The training preset: character, style or concept."),
                io.String.Input("lora_name", default="", tooltip="Name of the LoRA file; empty: the dataset name."),
                io.String.Input("trigger", default="", tooltip="Trigger word; empty: the dataset's."),
                io.Combo.Input("gpu", options=_gpu_options(), default="auto",
                               tooltip="auto: the offer with the lowest expected total cost for this job "
                                       "(not the lowest $/hr)."),
                io.Float.Input("max_usd", default=10.0, min=0.1, max=1000.0, step=0.5,
                               tooltip="Refuse to launch when the expected cost of the run is above this ($); "
                                       "the budget watchdog also stops the run once it has cost this much."),
                io.Float.Input("max_dph", default=2.0, min=0.05, max=50.0, step=0.05,
                               tooltip="The most $/hour to pay for the instance."),
                io.Float.Input("max_hours", default=6.0, min=0.25, max=72.0, step=0.25,
                               tooltip="The trainer checkpoints, uploads and destroys its instance after this "
                                       "many hours."),
                io.Boolean.Input("interruptible", default=False,
                                 tooltip="Bid for a cheaper interruptible instance; a preempted run resumes from "
                                         "its last checkpoint."),
                io.Combo.Input("provider", options=["vast", "local"], default="vast",
                               tooltip="vast: a rented GPU. local: this machine's GPU (24 GB or more)."),
                # the per-run preemption policy, as `train start` has it (service/runs/recovery.py)
                io.Float.Input("resume_wait_minutes", default=-1.0, min=-1.0, max=24 * 60.0, step=1.0,
                               optional=True,
                               tooltip="Minutes to wait for a preempted instance to resume before moving the run "
                                       "to a new GPU. -1: the preempt_wait_minutes setting."),
                io.Int.Input("max_attempts", default=0, min=0, max=50, optional=True,
                             tooltip="Most instances this run may use before it fails. 0: the "
                                     "preempt_max_attempts setting."),
                io.Int.Input("on_demand_after", default=-1, min=-1, max=50, optional=True,
                             tooltip="Rent on-demand (not interruptible) after this many preemptions; 0: never. "
                                     "-1: the preempt_on_demand_after setting."),
            ],
            outputs=[RUN.Output(display_name="run"), io.String.Output(display_name="summary")],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, dataset, lora_type: str, lora_name: str, trigger: str, gpu: str, max_usd: float,
                      max_dph: float, max_hours: float, interruptible: bool, provider: str,
                      resume_wait_minutes: float = -1.0, max_attempts: int = 0,
                      on_demand_after: int = -1) -> io.NodeOutput:
        _check(lora_type, LORA_TYPES, "lora_type")
        _check(provider, ["vast", "local"], "provider")
        _check(gpu, _gpu_options(), "gpu")
        app, storage, _work = await app_parts()
        req = node_runs.launch_request(dataset, lora_type=lora_type, lora_name=lora_name, trigger=trigger, gpu=gpu,
                                       provider=provider, interruptible=interruptible, max_usd=max_usd,
                                       max_dph=max_dph, max_hours=max_hours, resume_wait_minutes=resume_wait_minutes,
                                       max_attempts=max_attempts, on_demand_after=on_demand_after)
        # the same start as `train start` and the sidebar; returns at once, the run goes on without ComfyUI
        run = node_runs.run_ref(await app.runs.start(req), storage.url)
        return io.NodeOutput(run, run.summary, ui={"text": [run.summary]})


class LoraCloudAwaitLora(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudAwaitLora",
            display_name="LoRA Cloud: Await LoRA",
            category=f"{CATEGORY}/training",
            description="Wait for the run with a progress bar over the training steps, then download the LoRA "
                        "into models/loras/lora_cloud/ (checksum verified). Cancel stops the waiting, never the "
                        "paid run: stop a run from the LoRA Cloud sidebar or `lora-cloud train stop`.",
            inputs=[RUN.Input("run", tooltip="From Launch vast.ai Trainer.")],
            outputs=[io.String.Output(display_name="lora_name")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    async def execute(cls, run) -> io.NodeOutput:
        app, _storage, _work = await app_parts()
        # into app.loras_dir: the one rule the sidebar and the CLI use too; Cancel stops the wait only
        path = await app.runs.fetch_lora(run.run_id, run.lora_name, poll_s=2.0, should_stop=interrupted,
                                         on_status=node_runs.step_progress(progress_bar(cls.hidden.unique_id)))
        name = node_runs.comfy_lora_name(path)
        return io.NodeOutput(name, ui={"text": [f"{name} ({path.stat().st_size // 1024} KB)"]})


class LoraCloudLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraCloudLoraLoader",
            display_name="LoRA Cloud: Cloud LoRA Loader",
            category=f"{CATEGORY}/loaders",
            description="Apply a LoRA from your bucket to the model (and CLIP). The file is downloaded into "
                        "models/loras/lora_cloud/ when missing or different.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (e.g. Flux dev)."),
                io.Clip.Input("clip", optional=True, tooltip="The text encoders; leave empty for model only."),
                io.String.Input("lora_name", default="",
                                tooltip="A LoRA in your bucket (its name), or the output of Await LoRA."),
                io.Float.Input("strength_model", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly the LoRA changes the model."),
                io.Float.Input("strength_clip", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly the LoRA changes the text encoders."),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Clip.Output(display_name="clip")],
        )

    @classmethod
    async def execute(cls, model, lora_name: str, strength_model: float, strength_clip: float,
                      clip=None) -> io.NodeOutput:
        import comfy.sd
        import comfy.utils

        app, _storage, _work = await app_parts()
        # fetched into app.loras_dir when missing or different
        got = await app.library.download_lora(node_runs.library_lora_name(lora_name))
        path = Path(got.path)
        lora = await asyncio.to_thread(comfy.utils.load_torch_file, str(path), True)
        model_lora, clip_lora = comfy.sd.load_lora_for_models(model, clip, lora, strength_model,
                                                              strength_clip if clip is not None else 0)
        return io.NodeOutput(model_lora, clip_lora)


def all_nodes() -> list[type[io.ComfyNode]]:
    from .nodes_generate import LoraCloudRemoteGenerate
    from .nodes_templates import LoraCloudPromptList

    return [LoraCloudLoadImages, LoraCloudCropForTraining, LoraCloudRemoveBackground, LoraCloudCaption,
            LoraCloudPreviewDataset, LoraCloudSaveDataset, LoraCloudLoadDataset, LoraCloudLaunchTrainer,
            LoraCloudAwaitLora, LoraCloudLoraLoader, LoraCloudPromptList, LoraCloudRemoteGenerate]
