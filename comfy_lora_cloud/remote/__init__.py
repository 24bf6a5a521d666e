"""SSH to rented instances (asyncssh), done properly, and the remote ComfyUI's API.

    keys.py      the pack's dedicated ed25519 key pair (created on first use, 0600)
    hostkeys.py  each instance's host key, recorded on first contact and checked on every reconnect
    tunnel.py    connect, and a local port that reaches the instance's ComfyUI: keepalive,
                 automatic reconnect, every failure a clear :class:`~..errors.TunnelError`
    comfyui.py   ComfyUI's HTTP/websocket API (``/prompt``, ``/history``, ``/view``, ``/ws``,
                 ``/object_info``) through that port
    comfyui_answers.py  what that API answers: the records, the most each answer may be, and
                 the checks of each answer's shape (a remote's answers are untrusted input)

asyncssh is imported inside the functions that use it (an optional dependency must not stop the
pack from loading). Nothing here knows about runs, sessions or the bucket: ``service/sessions/control.py``
wires it.
"""
