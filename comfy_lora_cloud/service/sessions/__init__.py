"""Remote ComfyUI sessions: the public face the edges, the app and the guard use.

``control.py`` is the service (:class:`Sessions`), ``guard.py`` its share of every guard pass
(:class:`SessionGuard`), ``request.py`` what a user asks for (:class:`SessionRequest`, read from
a body or options at the edges), ``images.py`` the images a session sends back; ``launch.py``,
``store.py``, ``tunnels.py``, ``views.py`` and ``outputs.py`` are the service's parts; the records the
service hands to the edges (``to_dict()``: their JSON) are in ``views.py`` (and ``tunnels.py``'s keeper).
"""

from __future__ import annotations

from .control import Sessions
from .guard import BOOT_GRACE_S, GUARD_SLACK_S, SessionGuard, SessionGuardReport
from .images import (MAX_OUTPUT_BATCH_PIXELS, MAX_OUTPUT_PIXELS, OUTPUT_IMAGE_FORMATS, decode_output_image,
                     decode_output_images, save_output)
from .tunnels import TunnelKeeper
from .views import (Gallery, GalleryImage, GeneratedImage, Generation, SessionView, StartedSession,
                    StoppedSession)
from .request import (DEFAULT_IDLE_MINUTES, DEFAULT_VRAM_GB, REQUEST_RANGES, SessionRequest, new_session_id,
                      session_event)

__all__ = ["BOOT_GRACE_S", "DEFAULT_IDLE_MINUTES", "DEFAULT_VRAM_GB", "GUARD_SLACK_S", "Gallery", "GalleryImage",
           "GeneratedImage", "Generation", "MAX_OUTPUT_BATCH_PIXELS", "MAX_OUTPUT_PIXELS", "OUTPUT_IMAGE_FORMATS",
           "REQUEST_RANGES", "SessionGuard", "SessionGuardReport", "SessionRequest", "SessionView", "Sessions",
           "StartedSession", "StoppedSession", "TunnelKeeper", "decode_output_image", "decode_output_images",
           "new_session_id", "save_output", "session_event"]
