"""Where to crop, per LoRA type. Each function returns a box in source pixels plus notes; the
bucket step (:mod:`.bucket`) then cuts that box to a bucket's exact aspect ratio.

- character: the face. dlib's HOG detector runs on a copy downscaled to ``detect_size`` on the
  long side (detection is the slow step and HOG cost grows with the pixel count) and the box is
  mapped back. HOG's window is 80 px, so faces under ~10% of the long side are not found at the
  default 800 px: raise ``detect_size`` for group or full-body shots. Several faces: detections
  scoring under half the best score are dropped as likely false positives (HOG likes round
  patches and badges); of the rest the largest face is used and the others are reported. The
  face box is widened to head and shoulders. No face: a warning and the centre crop.
- concept: the salient subject, from a foreground mask (background removal) when there is one,
  else from a spectral-residual saliency map (Hou & Zhang, CVPR 2007), padded a little.
- style: the whole image (``none``) or its centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from PIL import Image

if TYPE_CHECKING:
    import numpy as np

Box = tuple[float, float, float, float]
CropMode = Literal["face", "object", "center", "none"]
CROP_FOR_TYPE: dict[str, CropMode] = {"character": "face", "concept": "object", "style": "none"}

DETECT_SIZE = 800  # long side of the copy the face detector sees
# Head and shoulders around a face box of width fw and height fh (multiples of fw / fh).
HEAD_SHOULDERS = {"side": 1.0, "above": 0.9, "below": 1.7}


@dataclass
class CropResult:
    box: Box
    method: str  # "face", "mask", "saliency", "center", "none", or "fallback-center"
    faces: list[tuple[Box, float]] = field(default_factory=list)  # all kept detections, (box, score)
    warnings: list[str] = field(default_factory=list)


def whole_image(size: tuple[int, int]) -> Box:
    return (0.0, 0.0, float(size[0]), float(size[1]))


def center_box(size: tuple[int, int]) -> Box:
    """The central square: the safest guess for a subject."""
    w, h = size
    side = min(w, h)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


_detector = None


def _face_detector():
    """dlib's HOG frontal face detector, built once per process (it needs no model file)."""
    global _detector
    if _detector is None:
        try:
            import dlib
        except ImportError:
            from ..errors import DatasetError

            raise DatasetError("face crops need dlib: pip install dlib-bin (or dlib); or choose the "
                               "'center' or 'object' crop") from None

        _detector = dlib.get_frontal_face_detector()
    return _detector


def detect_faces(image: Image.Image, detect_size: int | None = DETECT_SIZE, upsample: int | None = None) -> list[tuple[Box, float]]:
    """Face boxes in ``image``'s own pixels with their detector scores, best first.

    The detector sees a greyscale copy (HOG uses only intensity, and one channel resizes three
    times faster) at most ``detect_size`` px on the long side; ``None`` detects at full size (the
    slow baseline the benchmark compares with). ``upsample`` defaults to 1 for copies under half
    of ``detect_size`` (small images, whose faces may be under HOG's 80 px window) and 0 otherwise.
    """
    import numpy as np

    w, h = image.size
    scale = 1.0
    small = image.convert("L")
    if detect_size and max(w, h) > detect_size:
        scale = detect_size / max(w, h)
        small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                             reducing_gap=2.0)
    if upsample is None:
        upsample = 1 if detect_size and max(small.size) * 2 <= detect_size else 0
    rects, scores, _ = _face_detector().run(np.asarray(small), upsample, 0.0)
    found = []
    for r, score in zip(rects, scores):
        box = (r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
        found.append((box, float(score)))
    found.sort(key=lambda f: -f[1])
    return found


def choose_face(faces: list[tuple[Box, float]]) -> tuple[tuple[Box, float] | None, list[tuple[Box, float]]]:
    """Apply the several-faces rule; returns (chosen, kept)."""
    if not faces:
        return None, []
    best = max(score for _, score in faces)
    kept = [f for f in faces if f[1] >= best / 2]
    chosen = max(kept, key=lambda f: ((f[0][2] - f[0][0]) * (f[0][3] - f[0][1]), f[1]))
    return chosen, kept


def head_and_shoulders(face: Box, size: tuple[int, int]) -> Box:
    """Widen a face box to head and shoulders, clamped to the image."""
    left, top, right, bottom = face
    fw, fh = right - left, bottom - top
    box = (
        left - HEAD_SHOULDERS["side"] * fw,
        top - HEAD_SHOULDERS["above"] * fh,
        right + HEAD_SHOULDERS["side"] * fw,
        bottom + HEAD_SHOULDERS["below"] * fh,
    )
    return clamp_box(box, size)


def clamp_box(box: Box, size: tuple[int, int]) -> Box:
    w, h = size
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def face_crop(image: Image.Image, name: str = "", detect_size: int | None = DETECT_SIZE) -> CropResult:
    """Crop for a character LoRA: the chosen face widened to head and shoulders."""
    label = f"{name}: " if name else ""
    faces = detect_faces(image, detect_size)
    chosen, kept = choose_face(faces)
    if chosen is None:
        return CropResult(center_box(image.size), "fallback-center", [], [f"{label}no face found; used the centre crop"])
    notes = []
    if len(kept) > 1:
        notes.append(f"{label}{len(kept)} faces found; used the largest")
    return CropResult(head_and_shoulders(chosen[0], image.size), "face", kept, notes)


def mask_box(mask: "np.ndarray", threshold: float = 0.5) -> Box | None:
    """The bounding box of a foreground mask (values 0..1 or 0..255), or None if it is empty."""
    import numpy as np

    m = np.asarray(mask, dtype=np.float32)
    if m.max() > 1.0:
        m = m / 255.0
    ys, xs = np.nonzero(m >= threshold)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def saliency_map(image: Image.Image, size: int = 64) -> "np.ndarray":
    """Spectral-residual saliency at ``size`` px wide, normalised to 0..1."""
    import numpy as np

    w, h = image.size
    sw, sh = (size, max(1, round(h * size / w))) if w >= h else (max(1, round(w * size / h)), size)
    grey = np.asarray(image.convert("L").resize((sw, sh), Image.Resampling.BILINEAR), dtype=np.float64)
    spectrum = np.fft.fft2(grey)
    log_amp = np.log(np.abs(spectrum) + 1e-9)
    phase = np.angle(spectrum)
    residual = log_amp - _box_blur(log_amp, 3)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    # The FFT treats the image as periodic, so the borders light up; they are never the subject.
    m = 3
    sal[:m, :] = sal[-m:, :] = 0.0
    sal[:, :m] = sal[:, -m:] = 0.0
    sal = _box_blur(_box_blur(sal, 5), 5)
    sal -= sal.min()
    peak = sal.max()
    return sal / peak if peak > 0 else sal


def _box_blur(a: "np.ndarray", k: int) -> "np.ndarray":
    import numpy as np

    pad = k // 2
    padded = np.pad(a, pad, mode="edge")
    out = np.zeros_like(a)
    for dy in range(k):
        for dx in range(k):
            out += padded[dy : dy + a.shape[0], dx : dx + a.shape[1]]
    return out / (k * k)


def object_crop(image: Image.Image, mask: "np.ndarray | None" = None, name: str = "", pad: float = 0.1) -> CropResult:
    """Crop for a concept LoRA: the foreground mask's box, else the salient region, padded by ``pad``."""
    import numpy as np

    label = f"{name}: " if name else ""
    method = "mask"
    box = mask_box(mask) if mask is not None else None
    if box is None:
        method = "saliency"
        sal = saliency_map(image)
        hot = sal >= 3 * sal.mean()  # Hou & Zhang's object threshold
        ys, xs = np.nonzero(hot)
        if len(xs) == 0:
            return CropResult(center_box(image.size), "fallback-center", warnings=[f"{label}no salient subject; used the centre crop"])
        sx, sy = image.size[0] / sal.shape[1], image.size[1] / sal.shape[0]
        # 2nd..98th percentile: one stray hot pixel must not stretch the box to the edge.
        box = (
            float(np.percentile(xs, 2)) * sx, float(np.percentile(ys, 2)) * sy,
            float(np.percentile(xs, 98) + 1) * sx, float(np.percentile(ys, 98) + 1) * sy,
        )
    bw, bh = box[2] - box[0], box[3] - box[1]
    padded = (box[0] - pad * bw, box[1] - pad * bh, box[2] + pad * bw, box[3] + pad * bh)
    return CropResult(clamp_box(padded, image.size), method)


def crop_for(mode: CropMode, image: Image.Image, *, mask: "np.ndarray | None" = None, name: str = "",
             detect_size: int | None = DETECT_SIZE) -> CropResult:
    """Dispatch on the crop mode."""
    if mode == "face":
        return face_crop(image, name, detect_size)
    if mode == "object":
        return object_crop(image, mask, name)
    if mode == "center":
        return CropResult(center_box(image.size), "center")
    if mode == "none":
        return CropResult(whole_image(image.size), "none")
    raise ValueError(f"unknown crop mode {mode!r}")
