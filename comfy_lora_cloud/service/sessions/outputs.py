"""The gallery: the images remote sessions pushed to the bucket's ``outputs/<session>/``."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...models import Listed, Problem, validate_name
from ...storage import layout
from .views import Gallery, GalleryImage


def list_outputs(storage: Any, limit: int) -> Gallery:
    """The newest
    images the remote sessions pushed to the bucket (names no route could serve, and files
    that are not images by their bytes, are left out and reported). Blocking."""
    from ..library import check_file_name
    from ..library import ImageSniffer

    found: Listed[GalleryImage] = Listed()
    objs = sorted(storage.list(layout.OUTPUTS).objects, key=lambda o: o.updated or 0, reverse=True)
    sniffer = ImageSniffer()
    for obj in objs:
        rel = obj.key[len(layout.OUTPUTS):]
        parts = rel.split("/")
        if len(parts) != 2 or not layout.is_image(parts[1]):
            continue
        try:
            validate_name(parts[0], "session id")
            check_file_name(parts[1], "output name")
        except ConfigError as exc:
            found.problems.append(Problem.of(obj.key, exc))
            continue
        if sniffer.format_of(storage, obj) is None:
            found.problems.append(Problem(entry=obj.key[:300], message="not an image: left out of the gallery"))
            continue
        found.items.append(GalleryImage(session=parts[0], file=parts[1], size=obj.size, updated=obj.updated))
        if len(found.items) >= limit:
            break
    return Gallery(tuple(found.items), tuple(found.problems))


def read_output(storage: Any, session_id: str, file: str) -> Any:
    """One output image as the browser may get it (:class:`~..library.media.ServedFile`). Blocking."""
    from ..library import check_file_name
    from ..library import read_media, served_file

    check_file_name(file)
    key = layout.output_prefix(session_id) + file
    return served_file(read_media(storage, key), file)
