"""The desktop channel: the machine's own notifications. Text travels as argv or environment,
never through a shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any, Callable, Mapping

from ...errors import redact

Runner = Callable[..., Any]  # subprocess.run's shape


def _gvariant_string(text: str) -> str:
    """``text`` as a GVariant text-format string literal (what ``gdbus call`` parses)."""
    out = []
    for ch in text:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(" ")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


WINDOWS_TOAST = (
    "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime]"
    " > $null; $x = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent("
    "[Windows.UI.Notifications.ToastTemplateType]::ToastText02); $t = $x.GetElementsByTagName('text'); "
    "$t.Item(0).AppendChild($x.CreateTextNode($env:LORA_CLOUD_NOTIFY_TITLE)) > $null; "
    "$t.Item(1).AppendChild($x.CreateTextNode($env:LORA_CLOUD_NOTIFY_MESSAGE)) > $null; "
    "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
    "'{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe')"
    ".Show([Windows.UI.Notifications.ToastNotification]::new($x))"
)


def desktop_command(title: str, message: str, *, platform: str = sys.platform,
                    env: Mapping[str, str] | None = None,
                    which: Callable[[str], str | None] = shutil.which) -> tuple[list[str], dict[str, str]] | None:
    """The command (argv, extra environment) that shows a desktop notification here, or None
    when this machine has no desktop to show one on."""
    env = os.environ if env is None else env
    if platform == "darwin":
        exe = which("osascript")
        if not exe:
            return None
        return [exe, "-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                "-e", "end run", title, message], {}
    if platform == "win32":
        exe = which("powershell") or which("pwsh")
        if not exe:
            return None
        return [exe, "-NoProfile", "-NonInteractive", "-Command", WINDOWS_TOAST], {
            "LORA_CLOUD_NOTIFY_TITLE": title, "LORA_CLOUD_NOTIFY_MESSAGE": message}
    # Linux and the BSDs: the freedesktop notification service on the session bus
    if not (env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None  # a server, a container, an SSH session: no desktop
    exe = which("notify-send")
    if exe:
        return [exe, "--app-name=LoRA Cloud", "--", title, message], {}
    exe = which("gdbus")
    if exe and env.get("DBUS_SESSION_BUS_ADDRESS"):
        return [exe, "call", "--session", "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                "'LoRA Cloud'", "uint32 0", "''", _gvariant_string(title), _gvariant_string(message),
                "@as []", "@a{sv} {}", "int32 10000"], {}
    return None


def show(title: str, message: str, *, run_command: Runner, platform: str = sys.platform) -> tuple[str, str]:
    """Show one notification here: ``(outcome, detail)``, outcome ``sent``, ``skipped`` (no
    desktop on this machine) or ``failed``. Blocks up to 15 s: call it from the channel's thread."""
    found = desktop_command(title, message, platform=platform)
    if found is None:
        return "skipped", "no desktop here"
    argv, extra = found
    env = {**os.environ, **extra}
    proc = run_command(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=15, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else str(proc.stderr or "")
        return "failed", f"{os.path.basename(argv[0])} exited {proc.returncode}: {redact(err)[:200]}"
    return "sent", os.path.basename(argv[0])
