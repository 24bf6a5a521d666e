"""`lora-cloud lora`: list, show, test, download and delete trained LoRAs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ComfyUIError
from .common import (LIST_PAGE, confirm_or_abort, ctx_obj, emit, handle_errors, out_console, page_options,
                     report_page, report_problems, run)
from .dataset import _size


def Text(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - rich's, imported when a command prints
    from rich.text import Text as RichText

    return RichText(*args, **kwargs)


def Table(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - `lora-cloud --help` must not import rich
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS

# what made a LoRA, in the order `lora show` prints it (training/lora_meta.py: LoraInfo)
SHOWN = ("run_id", "date", "dataset", "images", "trigger", "lora_type", "preset", "overrides", "base_model",
         "steps", "epochs", "rank", "alpha", "learning_rate", "resolution", "final_loss", "gpu", "dph", "cost_usd")
# kohya keys worth a line; the rest (tag frequencies, bucket info...) are long and in --json
KOHYA_SHOWN = ("ss_output_name", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_learning_rate",
               "ss_num_epochs", "ss_steps", "ss_seed", "ss_base_model_version", "ss_guidance_scale",
               "ss_timestep_sampling", "modelspec.architecture", "modelspec.trigger_phrase")


def _text(value: Any, limit: int = 200) -> Text:
    """Bucket and header text is untrusted: never rich markup, never unbounded."""
    if value is None or value == "":
        return Text("")
    if isinstance(value, float):
        value = f"{value:.4g}"
    elif isinstance(value, dict):
        value = ", ".join(f"{k}={v}" for k, v in value.items()) or ""
    return Text(str(value)[:limit])


def _money(value: Any) -> Text:
    return Text(f"${value:.2f}") if isinstance(value, (int, float)) and not isinstance(value, bool) else Text("")


def _date(meta: dict[str, Any]) -> Text:
    if isinstance(meta.get("date"), str):
        return Text(meta["date"][:10])
    t = meta.get("created_at")
    return Text(time.strftime("%Y-%m-%d", time.gmtime(t))) if isinstance(t, (int, float)) else Text("")


@app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many LoRAs (by name)."),
    limit: int = typer.Option(LIST_PAGE, "--limit", min=1, max=1000, help="Show at most this many."),
    everything: bool = typer.Option(False, "--all", help="Show every LoRA."),
) -> None:
    """List LoRAs with what made them: trigger word, dataset, steps, rank, final loss, cost, date (a page at a
    time: --offset, --limit)."""
    found = run(ctx_obj(ctx).app.library.lora_listing(*page_options(offset, limit, everything)))
    items = found.loras
    report_problems(found.problems)
    report_page(found, "LoRAs", len(items))

    def human(_: object) -> None:
        if not items:
            out_console.print("no LoRAs yet")
            return
        t = Table("name", "size", "trigger", "dataset", "steps", "rank", "loss", "cost", "date", "run")
        for entry in items:
            lora = entry.lora
            m = lora.metadata if isinstance(lora.metadata, dict) else {}
            t.add_row(Text(lora.name), _size(lora.size), _text(m.get("trigger")), _text(m.get("dataset")),
                      _text(m.get("steps")), _text(m.get("rank")), _text(m.get("final_loss")),
                      _money(m.get("cost_usd")), _date(m), _text(m.get("run_id") or m.get("run")))
        out_console.print(t)

    emit(ctx, [entry.to_dict() for entry in items], human)


@app.command("show")
@handle_errors
def show(ctx: typer.Context, name: str = typer.Argument(..., help="LoRA name, or a .safetensors file here.")) -> None:
    """What made a LoRA: run, dataset, trigger word, settings, loss, cost.

    Read from its bucket JSON and its own safetensors header (which a downloaded file keeps),
    with kohya's ss_* keys."""
    library = ctx_obj(ctx).app.library
    local = Path(name).expanduser()
    if name.endswith(".safetensors") and local.is_file():
        data = run(library.lora_file_metadata(local))
    else:
        data = run(library.lora_metadata(name))
    report_problems(data.problems)

    def human(_: object) -> None:
        ours = {**data.lora_cloud, **{k: v for k, v in data.info.items() if k in SHOWN}}
        t = Table("", "", show_header=False, box=None)
        t.add_row("name", Text(data.name))
        t.add_row("size", _size(data.size))
        for key in SHOWN:
            if ours.get(key) not in (None, "", {}):
                t.add_row(key, _money(ours[key]) if key == "cost_usd" else _text(ours[key]))
        kohya = data.metadata
        for key in KOHYA_SHOWN:
            if kohya.get(key):
                t.add_row(key, _text(kohya[key]))
        out_console.print(t)
        if not ours:
            out_console.print("(no lora-cloud metadata: not made by a lora-cloud run, or made before it was recorded)")

    emit(ctx, data.to_dict(), human)


@app.command("test")
@handle_errors
def test(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="LoRA name."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p",
                                         help="Prompt (default: the trigger word in a sentence for the LoRA's type)."),
    compare: bool = typer.Option(False, "--compare", help="Compare strengths 0, 0.5, 0.75, 1 (lora_comparison)."),
    comfy: Optional[str] = typer.Option(None, "--comfy", help="ComfyUI URL (default: the remote session when one "
                                                              "is live, else the comfyui_url setting)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the image."),
    out: Optional[Path] = typer.Option(None, "--out", help="Save the image(s) here (with --wait)."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait."),
) -> None:
    """Render an image with a LoRA on a ComfyUI (one command).

    Queues the basic_txt2img template (--compare: lora_comparison) with the LoRA in its slot;
    that ComfyUI brings the LoRA from your bucket."""
    templates = ctx_obj(ctx).app.templates

    async def go() -> dict[str, Any]:
        queued = await templates.test_lora(name, prompt=prompt, compare=compare, url=comfy)
        result: dict[str, Any] = {**queued.to_dict(), "state": "queued", "images": []}
        if not wait:
            return result
        status = await templates.wait(queued.prompt_id, timeout=timeout)
        images = [image.to_dict() for image in status.images]
        result.update(state=status.state, error=status.error, images=images)
        if status.state == "failed" or status.state == "unknown":
            raise ComfyUIError(f"the test of {name} failed on {queued.target}: {status.error}")
        if status.state != "done":
            raise ComfyUIError(f"the test of {name} did not finish in {timeout:g} s (prompt {queued.prompt_id} "
                               f"on {queued.target})")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(status.images):
                served = await templates.test_image(queued.prompt_id, i)
                path = out / Path(image.filename).name
                path.write_bytes(served.body)
                images[i]["saved"] = str(path)
        return result

    data = run(go())

    def human(d: dict[str, Any]) -> None:
        out_console.print(Text(f"queued {d['template']} with {d['lora']} on {d['target']} (prompt {d['prompt_id']})"))
        out_console.print(Text(f"prompt: {d['prompt']}"))
        for image in d["images"]:
            out_console.print(Text(f"image: {image.get('saved') or image['subfolder'] + '/' + image['filename']}"))

    emit(ctx, data, human)


@app.command("download")
@handle_errors
def download(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="LoRA name."),
    dest: Optional[Path] = typer.Option(
        None, "--to", help="Folder (default: where Await LoRA and the sidebar put LoRAs: lora_cloud/ under "
                           "the comfyui_loras_dir setting, else under the ComfyUI this package is installed "
                           "in (or COMFYUI_PATH), else <home>/loras)."
    ),
) -> None:
    """Download a LoRA (checksum verified; written through a temporary name)."""
    data = run(ctx_obj(ctx).app.library.download_lora(name, dest))
    emit(ctx, {"lora": name, "path": data.path, "size": data.size}, f"saved {data.path}")


@app.command("delete")
@handle_errors
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="LoRA name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a LoRA and its metadata from storage."""
    confirm_or_abort(ctx, f"Delete LoRA {name!r}?", yes)
    data = run(ctx_obj(ctx).app.library.delete_lora(name))
    emit(ctx, {"lora": name, "deleted": data.deleted}, f"deleted LoRA {name!r}")
