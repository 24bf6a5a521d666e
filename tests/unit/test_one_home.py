"""Names of what a dataset holds are defined once (storage/layout.py): the manifest's file name
and the image suffixes. Checked on the source, so a second copy cannot creep back in."""

import ast
from pathlib import Path

from comfy_lora_cloud.dataset.load import FORMATS_BY_EXT, IMAGE_EXTENSIONS
from comfy_lora_cloud.storage import layout

PKG = Path(__file__).resolve().parents[2] / "comfy_lora_cloud"
HOME = PKG / "storage" / "layout.py"
FORMATS = PKG / "dataset" / "load.py"  # maps each suffix to the Pillow formats it must contain


def _constants(path: Path) -> list[tuple[str, int]]:
    """String literals, not counting pieces of f-strings (``f"{x}.jpg"`` names a file, not a rule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    return [(n.value, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in in_fstrings]


def test_manifest_name_and_image_suffixes_live_only_in_layout():
    offenders = []
    for path in PKG.rglob("*.py"):
        if path == HOME:
            continue
        for value, line in _constants(path):
            if value == layout.MANIFEST or (value in layout.IMAGE_SUFFIXES and path != FORMATS):
                offenders.append(f"{path.relative_to(PKG)}:{line} {value!r}")
    assert offenders == []


def test_the_loader_knows_the_pillow_formats_of_every_accepted_suffix():
    assert set(FORMATS_BY_EXT) == layout.IMAGE_SUFFIXES == IMAGE_EXTENSIONS
    assert layout.KOHYA_IMAGE_SUFFIXES <= layout.IMAGE_SUFFIXES


def test_dataset_files_are_images_captions_and_the_manifest():
    assert [layout.is_dataset_file(n) for n in ("a.PNG", "sub/a.txt", "dataset.json", ".lora-cloud-lock.json",
                                                 ".DS_Store", "notes.md", "x.safetensors")] == \
        [True, True, True, False, False, False, False]
