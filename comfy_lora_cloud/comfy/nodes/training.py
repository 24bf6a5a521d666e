"""The training nodes (ComfyUI V3 API): Launch vast.ai Trainer starts a run (``app.runs.start``,
as ``train start`` and the sidebar's quick launch do), Await LoRA follows it to the LoRA file
(``app.runs.fetch_lora``), and the Cloud LoRA Loader applies a LoRA from the bucket
(``app.library.download_lora``). Their inputs and outputs translate in :mod:`.runs`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfy_api.latest import io

from ...service.money import gpu_choices
from . import runs
from .plumbing import CATEGORY, LORA_TYPES, app_parts, check_choice, interrupted, progress_bar
from .sockets import DATASET, RUN


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
        check_choice(lora_type, LORA_TYPES, "lora_type")
        check_choice(provider, ["vast", "local"], "provider")
        check_choice(gpu, _gpu_options(), "gpu")
        app, storage, _work = await app_parts()
        req = runs.launch_request(dataset, lora_type=lora_type, lora_name=lora_name, trigger=trigger, gpu=gpu,
                                       provider=provider, interruptible=interruptible, max_usd=max_usd,
                                       max_dph=max_dph, max_hours=max_hours, resume_wait_minutes=resume_wait_minutes,
                                       max_attempts=max_attempts, on_demand_after=on_demand_after)
        # the same start as `train start` and the sidebar; returns at once, the run goes on without ComfyUI
        run = runs.run_ref(await app.runs.start(req), storage.url)
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
                                         on_status=runs.step_progress(progress_bar(cls.hidden.unique_id)))
        name = runs.comfy_lora_name(path)
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
        got = await app.library.download_lora(runs.library_lora_name(lora_name))
        path = Path(got.path)
        lora = await asyncio.to_thread(comfy.utils.load_torch_file, str(path), True)
        model_lora, clip_lora = comfy.sd.load_lora_for_models(model, clip, lora, strength_model,
                                                              strength_clip if clip is not None else 0)
        return io.NodeOutput(model_lora, clip_lora)
