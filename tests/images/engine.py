"""Run a built image the way a host would, with Docker or (no engine here) buildah.

``buildah run`` does not apply the image's ENTRYPOINT, so :meth:`Engine.run` reads it (and the
image's USER) from the image config and runs exactly that: what vast.ai starts is what runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping, Sequence


def pick_engine() -> str | None:
    wanted = os.environ.get("LORA_CLOUD_IMAGE_ENGINE")
    if wanted:
        return wanted
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("buildah") and os.geteuid() == 0:
        return "buildah"
    return None


@dataclass
class Engine:
    name: str  # docker | buildah

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "buildah":
            env.setdefault("STORAGE_DRIVER", "vfs")
            env.setdefault("BUILDAH_ISOLATION", "chroot")
        return env

    def _cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.name, *args], capture_output=True, text=True, env=self._env(), timeout=timeout)

    def exists(self, image: str) -> bool:
        if self.name == "docker":
            return self._cli("image", "inspect", image).returncode == 0
        return self._cli("inspect", "--type", "image", image).returncode == 0

    def config(self, image: str) -> dict:
        """The image's OCI/Docker config (Entrypoint, Cmd, User, Env, WorkingDir, ...)."""
        if self.name == "docker":
            return json.loads(self._cli("image", "inspect", image).stdout)[0]["Config"]
        data = json.loads(self._cli("inspect", "--type", "image", image).stdout)
        return data["OCIv1"]["config"]

    def run(self, image: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
            entrypoint: Sequence[str] | None = None, user: str | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the image's entrypoint (or ``entrypoint``) with ``args``, on the host network, as the
        image's user (or ``user``). Returns the finished process (stdout and stderr as text)."""
        env = dict(env or {})
        if self.name == "docker":
            cmd = ["docker", "run", "--rm", "--network", "host"]
            cmd += [f"--env={k}={v}" for k, v in env.items()]
            if user:
                cmd += ["--user", user]
            if entrypoint is not None:
                cmd += ["--entrypoint", entrypoint[0] if entrypoint else "", image, *entrypoint[1:], *args]
            else:
                cmd += [image, *args]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        cfg = self.config(image)
        program = list(entrypoint) if entrypoint is not None else list(cfg.get("Entrypoint") or [])
        made = self._cli("from", "--pull-never", image)
        assert made.returncode == 0, made.stderr
        ctr = made.stdout.strip().splitlines()[-1]
        try:
            cmd = ["buildah", "run", "--network", "host"]
            cmd += [f"--env={k}={v}" for k, v in env.items()]
            cmd += ["--user", user or cfg.get("User") or "root", ctr, "--", *program, *args]
            return subprocess.run(cmd, capture_output=True, text=True, env=self._env(), timeout=timeout)
        finally:
            self._cli("rm", ctr)
