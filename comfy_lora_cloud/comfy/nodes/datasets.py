"""The dataset nodes (ComfyUI V3 API): photos from a folder, ComfyUI's input folder or the bucket,
cropped, cleaned and captioned for training, previewed, and saved as a dataset in the bucket (or
a saved one loaded). The work is :mod:`comfy_lora_cloud.service.graph`'s image-folder steps, run
in a thread; the nodes hand them ComfyUI's progress bar and Cancel button.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from comfy_api.latest import io

from ...service import graph
from ..wiring import holder
from .plumbing import CATEGORY, LORA_TYPES, app_parts, check_choice, progress_bar
from .sockets import DATASET, IMAGES

CROPS = ["auto", "face", "object", "center", "none"]


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
        check_choice(source, ["folder", "input", "dataset"], "source")
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
        check_choice(lora_type, LORA_TYPES, "lora_type")
        check_choice(crop, CROPS, "crop")
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
        check_choice(lora_type, LORA_TYPES, "lora_type")
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
        check_choice(model, ["florence", "blip2", "none"], "model")
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
