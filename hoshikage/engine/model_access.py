"""Whether the running daemon can open a model's file, and the fix when it cannot.

The packaged service runs as its own user with ProtectHome= and PrivateTmp=,
so a file under /home, /root or /tmp is invisible to it however its mode is
set. The model pool asks here before a load (a missing file is a clear 503,
not llama.cpp's bare failure); ``hoshikage add`` asks before registering
(model_files.py).
"""

from __future__ import annotations

import os
from pathlib import Path

HIDDEN_FROM_SERVICE = (Path("/home"), Path("/root"), Path("/run/user"), Path("/tmp"), Path("/var/tmp"))


def hidden_from_service(path: Path) -> bool:
    """True when the hardened systemd service cannot see PATH at all."""
    return any(path == hidden or hidden in path.parents for hidden in HIDDEN_FROM_SERVICE)


def why_unloadable(alias: str, path: Path) -> str | None:
    """Why the running daemon cannot open the file of ALIAS, with the fix; None when it can."""
    fix = f"register it again with `hoshikage add --import FILE {alias} --replace`"
    if not path.exists():
        if hidden_from_service(path):
            return (f"the daemon cannot see {path}: it does not exist, or it is under /home, /root or /tmp, "
                    f"which systemd hides from the service; {fix}, which copies it where the service can read it")
        return f"its file {path} does not exist (moved or deleted?); {fix}, or put the file back"
    if not path.is_file():
        return f"{path} is not a regular file; {fix}"
    if not os.access(path, os.R_OK):
        return f"the daemon may not read {path} (permission denied); {fix}, or let the service user read it"
    return None
