"""The README's first command, parsed from the README and run as a new user would, in a clean
folder: a copy of examples/, a HOME of its own (the real one must stay untouched), no
LORA_CLOUD_* variables. The install line is checked, not run: the test venv stands in for it
(``.venv/bin/`` becomes this interpreter's bin folder); every other line runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def first_command() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    start = text.index("**Try it on a fresh machine**")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, "the README's try-it section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_readme(tmp_path: Path, *, again: bool = False) -> tuple[subprocess.CompletedProcess, Path, Path]:
    lines = first_command()
    install, rest = lines[0], lines[1:]
    # what the install line must give a fresh machine: a venv of its own with the dataset tools
    assert install.startswith("python3 -m venv .venv") and '-e ".[dataset]"' in install, install
    assert any("LORA_CLOUD_HOME" in line for line in rest), "the try-out must not use the real home"
    bin_dir = Path(sys.executable).parent
    script = "\n".join(line.replace(".venv/bin/", f"{bin_dir}/") for line in rest)
    clone, home = tmp_path / "clone", tmp_path / "home"
    if not again:
        shutil.copytree(REPO / "examples", clone / "examples")
        home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_CLOUD_") and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), COLUMNS="200")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, clone, home


def test_the_readme_first_command_prepares_validates_and_plans(tmp_path):
    proc, clone, home = run_readme(tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:{out}\nstderr:{proc.stderr}"
    assert "Traceback" not in out + proc.stderr and "FAILED" not in out
    # prepared: the bundled photos, cropped to buckets, captions from their .txt files
    assert "prepared 8 images into datasets/tiny/" in out and "skipped" not in out
    assert re.search(r"8 images, \d+ buckets: 1024x\d+ x\d", out)
    assert out.count("\nOK\n") == 2  # prepare's report, then validate's
    # planned: steps, hours and dollars priced from the bundled offer book
    assert re.search(r"style LoRA, 24 GB tier: 8 images x \d+ repeats, .* = \d+ steps", out)
    assert re.search(r"~[\d.]+ h, ~\$[\d.]+ at \$[\d.]+/hr \(estimate; priced from the bundled offer book", out)
    assert "dataset 'tiny': ready to train" in out
    # and what to do next
    assert "next: set up storage and vast.ai (docs/setup.md), check them with: lora-cloud doctor" in out
    assert "next: lora-cloud train start --dataset tiny --type style" in out
    # everything it wrote is in .work/try; the user's home is untouched
    try_dir = clone / ".work" / "try"
    assert (try_dir / "plan" / "train.toml").is_file() and (try_dir / "plan" / "dataset.toml").is_file()
    manifest = try_dir / "bucket" / "datasets" / "tiny" / "dataset.json"
    assert manifest.is_file()
    assert sorted(p.name for p in (try_dir / "bucket" / "datasets" / "tiny").glob("*.txt")) == \
        sorted(p.name for p in (REPO / "examples" / "tiny_dataset").glob("*.txt"))
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in clone.iterdir()) == [".work", "examples"]

    # the same commands a second time in the same folder work too (prepare replaces the dataset)
    proc2, _, _ = run_readme(tmp_path, again=True)
    assert proc2.returncode == 0, proc2.stderr
    assert "prepared 8 images into datasets/tiny/" in proc2.stdout and list(home.iterdir()) == []
