"""Near-duplicate images by perceptual hash.

Two 64-bit hashes per image, both in numpy/PIL (no extra dependency):
- dHash: the sign of horizontal gradients on a 9x8 greyscale thumbnail; robust to scaling,
  compression and brightness;
- pHash: the sign of the 8x8 lowest DCT frequencies of a 32x32 thumbnail against their median;
  robust to small crops and colour changes.
Two images are near-duplicates when both hashes are within ``max_distance`` bits. Duplicates
are reported, not deleted: the user decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PIL import Image

MAX_DISTANCE = 10  # of 64 bits, for each hash (a 2% crop scores ~9; unrelated photos ~30)


@dataclass(frozen=True)
class ImageHash:
    dhash: int
    phash: int

    def to_hex(self) -> str:
        return f"{self.dhash:016x}{self.phash:016x}"

    @classmethod
    def from_hex(cls, text: str) -> "ImageHash":
        return cls(int(text[:16], 16), int(text[16:32], 16))


def _bits_to_int(bits) -> int:
    value = 0
    for b in bits.flatten():
        value = (value << 1) | int(bool(b))
    return value


def dhash(image: Image.Image) -> int:
    import numpy as np

    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_int(small[:, 1:] > small[:, :-1])


def _dct_matrix(n: int):
    import numpy as np

    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def phash(image: Image.Image) -> int:
    import numpy as np

    small = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix(32)
    low = (d @ small @ d.T)[:8, :8]
    return _bits_to_int(low > np.median(low.flatten()[1:]))  # the DC term would skew the median


def image_hash(image: Image.Image) -> ImageHash:
    return ImageHash(dhash(image), phash(image))


def distance(a: ImageHash, b: ImageHash) -> int:
    """The larger of the two Hamming distances."""
    return max(bin(a.dhash ^ b.dhash).count("1"), bin(a.phash ^ b.phash).count("1"))


def find_duplicates(hashes: Sequence[tuple[str, ImageHash]], max_distance: int = MAX_DISTANCE) -> list[list[str]]:
    """Groups (each of two or more names, in input order) of near-duplicate images.

    Pairs are joined transitively (union-find); n is a training set (tens to hundreds), so the
    O(n^2) comparison is cheap.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if distance(hashes[i][1], hashes[j][1]) <= max_distance:
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, (name, _) in enumerate(hashes):
        groups.setdefault(root(i), []).append(name)
    return [g for g in groups.values() if len(g) > 1]
