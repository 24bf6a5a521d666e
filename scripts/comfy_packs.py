"""Put the custom node packs of comfy_lora_cloud/data/comfy_packs.json, at their pinned commits,
into a folder (one subfolder per pack, as ComfyUI/custom_nodes/ wants them).

    python scripts/comfy_packs.py DEST [--mirror DIR]

With ``--mirror`` (or ``PACKS_MIRROR``), a pack is taken from ``DIR/<owner>+<name>/repo`` (a git
directory, bare is fine) when it is there; otherwise it is cloned from GitHub. Blobs a partial
mirror lacks (large example images, model files) are left out, and so are the files a pack's
``drop`` names (each with its ``why_drop``). A pack already at its commit (``.pinned-commit``)
is kept. The inference image and the opt-in template test both use this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKS = Path(__file__).resolve().parents[1] / "comfy_lora_cloud" / "data" / "comfy_packs.json"


def _git(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], check=True, capture_output=True, **kw)


def _archive(git_dir: Path, commit: str, dest: Path) -> None:
    """``git archive`` of ``commit`` into ``dest``, without blobs the git directory lacks."""
    tree = _git("--git-dir", str(git_dir), "ls-tree", "-r", commit, text=True).stdout
    missing = []
    for line in tree.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob" and subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "-e", sha],
                                             capture_output=True).returncode != 0:
            missing.append(f":(exclude){path}")
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "--git-dir", str(git_dir), "archive", commit, "--", ".", *missing],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"git archive {commit} failed in {git_dir}")
    if missing:
        print(f"  {dest.name}: left out {len(missing)} file(s) the mirror lacks", file=sys.stderr)


def fetch(dest: Path, mirror: Path | None = None) -> list[Path]:
    spec = json.loads(PACKS.read_text())
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for pack in spec["packs"]:
        target = dest / pack["into"] / pack["name"] if pack.get("into") else dest / pack["name"]
        stamp = target / ".pinned-commit"
        pin = " ".join([pack["commit"], *pack.get("drop", [])])
        if stamp.is_file() and stamp.read_text().strip() == pin:
            done.append(target)
            continue
        shutil.rmtree(target, ignore_errors=True)
        owner, name = pack["repo"].rstrip("/").split("/")[-2:]
        git_dir = mirror / f"{owner}+{name}" / "repo" if mirror else None
        if git_dir is not None and git_dir.is_dir():
            _archive(git_dir, pack["commit"], target)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                _git("clone", "--quiet", "--filter=blob:none", "--no-checkout", pack["repo"], tmp)
                _archive(Path(tmp) / ".git", pack["commit"], target)
        for rel in pack.get("drop", []):
            (target / rel).unlink(missing_ok=True)
        stamp.write_text(pin + "\n")
        print(f"{target} at {pack['commit'][:10]}", file=sys.stderr)
        done.append(target)
    return [p for p in done if p.parent == dest]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--mirror", type=Path, default=os.environ.get("PACKS_MIRROR") or None)
    args = ap.parse_args()
    for path in fetch(args.dest, args.mirror):
        print(path)


if __name__ == "__main__":
    main()
