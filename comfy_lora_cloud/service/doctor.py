"""``lora-cloud doctor``: every setting and credential checked against the real services, each
line with its fix. The one home of those checks (reached as ``app.doctor``).

    settings      the config files read and the values are valid (else nothing else can run)
    storage       the bucket (or folder) answers a listing, a write, a read-back and a delete
    gpu access    a rented GPU can reach the storage (a gs:// bucket and a service account for it)
    vast.ai key   the API key is accepted
    credit        the account has credit for at least one run at the per-run budget
    ssh key       a public key is registered (and ssh_key_path's one, when set)
    hf token      Hugging Face accepts the token (only needed while models/ lacks weights)
    flux licence  the token may read the gated FLUX.1-dev repo (the licence was accepted)
    base weights  models/ in the bucket holds flux, clip_l, t5xxl and ae (else each run downloads them)
    comfyui       a ComfyUI this pack is installed in (only needed for the nodes and the sidebar)

A check that cannot run because an earlier one failed says ``skip`` and why. Nothing is rented,
and the one object written (a probe under ``.lora-cloud-doctor/``) is deleted again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

from ..errors import ConfigError, LoraCloudError, StorageError
from ..training.kohya_config import GATED_REPOS
from ..training.weights import missing_weights

if TYPE_CHECKING:
    from .core import Core

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PROBE_PREFIX = ".lora-cloud-doctor/"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""
    exit_code: int = 0  # the error kind's exit code (errors.py) when it failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(name: str, exc: BaseException, fix: str) -> Check:
    code = exc.exit_code if isinstance(exc, LoraCloudError) else StorageError.exit_code
    message = exc.message if isinstance(exc, LoraCloudError) else f"{type(exc).__name__}: {exc}"
    return Check(name, FAIL, message, fix, code)


class Doctor:
    """Runs the checks with the app's current settings. ``hub`` builds the Hugging Face client from
    a token (default: :class:`~.hub.HttpHub`); tests give a fake."""

    def __init__(self, core: Core, hub: Callable[[str | None], Any] | None = None):
        self.core = core
        self.hub = hub

    def _hub(self, token: str | None) -> Any:
        if self.hub is not None:
            return self.hub(token)
        from .library import HttpHub

        return HttpHub(token)

    async def run(self) -> list[Check]:
        out: list[Check] = []
        settings = self.core.settings
        problem = self.core.settings_problem
        if problem:  # a damaged file: the rest is checked with the settings in force instead
            out.append(Check("settings", FAIL, problem, "fix it with `lora-cloud config set KEY VALUE` or "
                             f"`config unset KEY` (files: {settings.home})", ConfigError.exit_code))
        else:
            out.append(Check("settings", OK, f"read from {settings.home}"))
        storage_ok = await self._storage(out)
        self._gpu_access(out)
        await self._vast(out)
        weights_missing = await self._weights(out, storage_ok)
        await self._hugging_face(out, weights_missing)
        out.append(self._comfyui())
        return out

    # ---- storage -------------------------------------------------------------------------------
    async def _storage(self, out: list[Check]) -> bool:
        url = self.core.settings.storage_url
        fix = ("create the bucket, give the service account 'Storage Object Admin' on it, and check "
               "gcs_service_account_json (docs/setup.md)" if url.startswith("gs://") else
               "make the folder writable, or set storage to another folder")
        try:
            storage = await asyncio.to_thread(lambda: self.core.storage)
            detail = await asyncio.to_thread(self._probe, storage)
        except Exception as exc:  # noqa: BLE001 - a check reports, it never stops the others
            out.append(_fail("storage", exc, fix))
            return False
        out.append(Check("storage", OK, detail))
        return True

    @staticmethod
    def _probe(storage: Any) -> str:
        """List, write, read back and delete one small object: the rights every command needs."""
        storage.list("datasets/", delimiter="/")
        key = f"{PROBE_PREFIX}{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}.txt"
        body = b"lora-cloud doctor probe: safe to delete\n"
        storage.write_bytes(key, body, content_type="text/plain")
        try:
            if storage.read_bytes(key) != body:
                raise StorageError(f"{key} read back different bytes than were written")
        finally:
            storage.delete(key)
        if storage.exists(key):
            raise StorageError(f"{key} is still there after a delete: the credentials lack delete rights")
        return f"{storage.url}: list, write, read and delete work"

    def _gpu_access(self, out: list[Check]) -> None:
        s = self.core.settings
        if not s.storage_url.startswith("gs://"):
            out.append(Check("gpu access", WARN, f"storage is the local folder {s.storage_url}: fine for trying "
                             "things out, but a rented GPU cannot reach it, so `train start` on vast.ai is refused",
                             "lora-cloud config set storage gs://YOUR-BUCKET/lora (docs/setup.md)", ConfigError.exit_code))
            return
        sa = s.secret("gcs_service_account_json")
        fix = "lora-cloud config set gcs_service_account_json - < key.json (docs/credentials.md)"
        if not sa:
            out.append(Check("gpu access", FAIL, "no service-account key for the bucket: a rented GPU would have no "
                             "credentials for it", fix, ConfigError.exit_code))
            return
        problem = service_account_problem(sa)
        if problem:
            out.append(Check("gpu access", FAIL, f"gcs_service_account_json {problem}", fix, ConfigError.exit_code))
            return
        out.append(Check("gpu access", OK, "a gs:// bucket and a service-account key the trainer will use"))

    # ---- vast.ai -------------------------------------------------------------------------------
    async def _vast(self, out: list[Check]) -> None:
        if not self.core.has_vast_key():
            out.append(Check("vast.ai key", FAIL, "no vast.ai API key is set",
                             "create one at https://cloud.vast.ai/manage-keys/ and run "
                             "`lora-cloud config set vast_api_key` (docs/setup.md)", ConfigError.exit_code))
            for name in ("credit", "ssh key"):
                out.append(Check(name, SKIP, "needs the vast.ai key"))
            return
        try:
            async with self.core.provider("vast")() as provider:
                client = provider.account
                if client is None:
                    out.append(Check("vast.ai key", SKIP, f"provider {type(provider).__name__} has no account API"))
                    return
                user = await client.current_user()
                out.append(Check("vast.ai key", OK, f"accepted (account {str(user.get('username') or '?')[:60]})"))
                out.append(self._credit(user))
                out.append(await self._ssh(client))
        except LoraCloudError as exc:
            status = getattr(exc, "status", None)
            fix = ("the key is refused: make a new one at https://cloud.vast.ai/manage-keys/ and "
                   "`lora-cloud config set vast_api_key`" if status in (401, 403) else
                   f"check vast_url ({self.core.settings.vast_url}) and the network")
            out.append(_fail("vast.ai key", exc, fix))
            for name in ("credit", "ssh key"):
                out.append(Check(name, SKIP, "needs a working vast.ai key"))

    def _credit(self, user: dict[str, Any]) -> Check:
        from ..errors import ProviderError

        try:
            credit = float(user.get("credit") or 0.0)
        except (TypeError, ValueError):
            return Check("credit", WARN, "vast.ai did not say how much credit the account has")
        run_usd = self.core.settings.max_run_usd
        fix = "add credit at https://cloud.vast.ai/billing/ (docs/setup.md)"
        if credit <= 0:
            return Check("credit", FAIL, f"${credit:.2f}: vast.ai stops instances of an account without credit",
                         fix, ProviderError.exit_code)
        if run_usd and credit < run_usd:
            return Check("credit", WARN, f"${credit:.2f}, less than one run at the ${run_usd:g} per-run budget", fix)
        return Check("credit", OK, f"${credit:.2f}")

    async def _ssh(self, client: Any) -> Check:
        from ..errors import TunnelError

        keys = await client.ssh_keys()
        registered = {_key_id(str(k.get("public_key") or k.get("ssh_key") or k.get("key") or ""))
                      for k in keys if isinstance(k, dict)} - {""}
        path = self.core.settings.ssh_key_path
        add = "add it at https://cloud.vast.ai/manage-keys/ (SSH is for people and remote ComfyUI sessions)"
        own = self.core.settings.home / "ssh" / "id_ed25519"  # the pack's own key (remote/keys.py), made on first use
        if not path and own.is_file():
            path = str(own)
        if path:
            try:
                mine = await asyncio.to_thread(_public_key_of, Path(path).expanduser())
            except (OSError, ValueError) as exc:
                return Check("ssh key", FAIL, f"ssh_key_path {path} cannot be read: {exc}",
                             "point ssh_key_path at your private key (its .pub next to it)", TunnelError.exit_code)
            if _key_id(mine) not in registered:
                return Check("ssh key", FAIL, f"the key in {path} is not registered with vast.ai ({len(registered)} "
                             "other key(s) are)", f"{add}: paste {path}.pub", TunnelError.exit_code)
            return Check("ssh key", OK, f"{path} is registered")
        return Check("ssh key", OK, f"{len(registered)} key(s) registered; the pack makes its own key under "
                     f"{own.parent} and registers it on first use (or set ssh_key_path to use yours)")

    # ---- weights and Hugging Face --------------------------------------------------------------
    async def _weights(self, out: list[Check], storage_ok: bool) -> list[str]:
        from ..training.kohya_config import MODEL_FILES

        every = [f for f, _ in MODEL_FILES.values()]
        if not storage_ok:
            out.append(Check("base weights", SKIP, "needs working storage"))
            return every
        try:
            missing = [f for f, _ in await asyncio.to_thread(lambda: missing_weights(self.core.storage))]
        except LoraCloudError as exc:
            out.append(_fail("base weights", exc, "see the storage line"))
            return every
        if missing:
            out.append(Check("base weights", WARN, f"models/ lacks {', '.join(missing)}: every run downloads them "
                             "from Hugging Face first (~30 GB, paid GPU time)",
                             "lora-cloud models cache (once; --from DIR uploads files you already have)"))
        else:
            out.append(Check("base weights", OK, "models/ holds flux, ae, clip_l and t5xxl"))
        return missing

    async def _hugging_face(self, out: list[Check], weights_missing: list[str]) -> None:
        token = self.core.settings.secret("hf_token")
        fix_token = ("make a read token at https://huggingface.co/settings/tokens and `lora-cloud config set hf_token`")
        if not token:
            if weights_missing:
                out.append(Check("hf token", FAIL, "no Hugging Face token, and the bucket lacks base weights: a run "
                                 "could not get them", fix_token + ", or `lora-cloud models cache --from DIR`",
                                 ConfigError.exit_code))
            else:
                out.append(Check("hf token", OK, "not needed: the bucket holds the base weights"))
            out.append(Check("flux licence", SKIP, "needs a Hugging Face token"))
            return
        hub = self._hub(token)
        try:
            name = await asyncio.to_thread(hub.whoami)
        except LoraCloudError as exc:
            out.append(_fail("hf token", exc, fix_token))
            out.append(Check("flux licence", SKIP, "needs a working Hugging Face token"))
            return
        out.append(Check("hf token", OK, f"accepted (account {name})"))
        for repo in GATED_REPOS:
            try:
                await asyncio.to_thread(hub.check, repo)
            except LoraCloudError as exc:
                out.append(_fail("flux licence", exc, f"open https://huggingface.co/{repo} logged in as {name} and "
                                 "accept the licence"))
                continue
            out.append(Check("flux licence", OK, f"{repo} readable with this token"))

    # ---- ComfyUI -------------------------------------------------------------------------------
    def _comfyui(self) -> Check:
        found = find_comfyui(self.core.settings.comfyui_loras_dir)
        if found is None:
            return Check("comfyui", WARN, "no ComfyUI found (needed only for the nodes and the sidebar; the CLI "
                         "works without it)", "clone this repository into ComfyUI/custom_nodes/comfy_lora_cloud "
                         "(docs/setup.md), or set comfyui_loras_dir")
        return Check("comfyui", OK, f"ComfyUI at {found}")


def service_account_problem(text: str) -> str | None:
    """What is wrong with a service-account key's JSON (its shape only: the signature is Google's
    to check), or None. A key stored as ``{`` (one line of a file read as a line) is caught here."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return f"is not JSON ({len(text)} characters): store the whole key file, read with `- < key.json`"
    if not isinstance(data, dict) or data.get("type") != "service_account":
        return "is not a service-account key (its \"type\" is not \"service_account\")"
    missing = [k for k in ("client_email", "private_key", "token_uri") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        return "lacks " + ", ".join(missing)
    if "PRIVATE KEY-----" not in data["private_key"]:
        return "has a private_key that is not a PEM key"
    return None


def find_comfyui(loras_dir: str | None = None) -> Path | None:
    """A ComfyUI checkout: the one this package is installed in (``custom_nodes/``), the one above
    ``comfyui_loras_dir`` (``<ComfyUI>/models/loras``), or ``COMFYUI_PATH``."""
    here = Path(__file__).resolve()
    candidates = [p.parent for p in here.parents if p.name == "custom_nodes"]
    if loras_dir:
        candidates += list(Path(loras_dir).expanduser().resolve().parents)[:3]
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]).expanduser())
    for c in candidates:
        if (c / "main.py").is_file() and (c / "comfy").is_dir():
            return c
    return None


def _key_id(public_key: str) -> str:
    """``type base64`` of an OpenSSH public key line (the comment does not matter)."""
    parts = public_key.strip().split()
    return " ".join(parts[:2]) if len(parts) >= 2 else ""


def _public_key_of(path: Path) -> str:
    pub = path if path.suffix == ".pub" else path.with_name(path.name + ".pub")
    if pub.is_file():
        return pub.read_text("utf-8").strip()
    import asyncssh

    try:
        return asyncssh.read_private_key(str(path)).export_public_key().decode().strip()
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise ValueError(f"not a private key without a passphrase, and no {pub.name} next to it ({exc})") from None


def summary(checks: list[Check]) -> tuple[str, int]:
    """One line, and the exit code: the first failed check's error kind, else 0."""
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    if failed:
        return (f"{len(failed)} problem(s) to fix before training: " + ", ".join(c.name for c in failed),
                failed[0].exit_code or 1)
    return ("all checks passed" if not warned else f"no failures; {len(warned)} warning(s) above"), 0


__all__ = ["Check", "Doctor", "find_comfyui", "summary", "OK", "WARN", "FAIL", "SKIP"]
