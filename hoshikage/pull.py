"""`hoshikage pull REPO[:QUANT]` / `pull REPO/FILE.gguf`: a GGUF model from Hugging Face, by name.

The CLI downloads, run by the admin; the daemon itself never downloads
anything. With huggingface_hub (``HF_ENDPOINT`` and ``HF_TOKEN`` as it reads
them, so gated models and mirrors work), into ``STATE_DIR/models/hf/``:

- Which file, the way llama-server's ``-hf`` picks it: the repository's
  ``.gguf`` files that are a model (not an ``mmproj``, ``imatrix``, ``mtp-``,
  ``eagle3-``, ``dflash-`` or ``dspark-`` file), in the hub's order; with a
  QUANT, the first whose path holds QUANT followed by ``.`` or ``-`` (case
  apart); without one, Q4_K_M, else Q8_0, else the first model file. A split
  model (``-00001-of-00003.gguf``) is chosen by its first part and comes whole.
- A download that stops (a closed connection, Ctrl-C, a killed process)
  resumes where it stopped on the next ``pull``: it is written into
  ``FILE.partial`` and the rest asked for with a Range request. (huggingface_hub
  is used for what the hub says, the file list, sizes, sha256 and commit, and
  its URLs and headers; its own downloader starts over in each process.)
- Every file is checked against the sha256 the hub lists for it before it is
  registered; a mismatch deletes the file and says so. The GGUF header is then
  read as ``hoshikage add`` reads it, and the model registered, owned by the
  state directory (``hoshikage remove`` deletes the files).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTIAL = ".partial"  # what a download writes into until it is whole and checked
CHUNK = 1 << 20
TIMEOUT_SECONDS = 60.0  # without a byte for this long, the transfer counts as stopped
NOT_A_MODEL = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
DEFAULT_QUANTS = ("Q4_K_M", "Q8_0")
SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class PullError(Exception):
    """What stopped a pull, and what to do about it."""


def parse_reference(text: str) -> tuple[str, str | None, str | None]:
    """(repo, quant, file) of ``USER/REPO[:QUANT]`` or ``USER/REPO/PATH.gguf``."""
    reference, _, quant = text.strip().partition(":")
    parts = reference.split("/")
    if len(parts) < 2 or not all(parts) or any(part in (".", "..") for part in parts):
        raise PullError(f"{text!r} is not USER/REPO[:QUANT] or USER/REPO/FILE.gguf")
    repo = "/".join(parts[:2])
    if len(parts) > 2:
        if quant or not reference.endswith(".gguf"):
            raise PullError(f"{text!r}: a file in a repository is USER/REPO/FILE.gguf, without a :QUANT")
        return repo, None, "/".join(parts[2:])
    return repo, quant or None, None


def is_model_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".gguf") and not any(marker in name for marker in NOT_A_MODEL)


def choose(paths: list[str], quant: str | None, file: str | None) -> list[str]:
    """The files to download for QUANT (or FILE), in the hub's order of PATHS: one, or a split model's parts."""
    if file is not None:
        if file not in paths:
            raise PullError(f"there is no {file} in the repository; its GGUF files: {_listing(paths)}")
        first = file
    else:
        first = _best(paths, quant)
        if first is None:
            wanted = f"no model file for {quant!r}" if quant else "no GGUF model file"
            raise PullError(f"{wanted} in the repository; its GGUF files: {_listing(paths)}")
    split = SPLIT.search(first)
    if split is None:
        return [first]
    prefix, count = first[:split.start()], int(split.group(2))
    parts = [f"{prefix}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]
    missing = [part for part in parts if part not in paths]
    if missing:
        raise PullError(f"the split model {first} lacks {', '.join(missing)} in the repository")
    return parts


def _best(paths: list[str], quant: str | None) -> str | None:
    for tag in (quant,) if quant else DEFAULT_QUANTS:
        pattern = re.compile(re.escape(tag) + r"[.-]", re.IGNORECASE)
        for path in paths:
            split = SPLIT.search(path)
            if is_model_file(path) and pattern.search(path) and (split is None or int(split.group(1)) == 1):
                return path
    if quant:
        return None
    return next((path for path in paths if is_model_file(path)
                 and ((split := SPLIT.search(path)) is None or int(split.group(1)) == 1)), None)


def _listing(paths: list[str]) -> str:
    models = [path for path in paths if is_model_file(path)]
    return ", ".join(models) if models else "none"


def default_alias(repo: str, quant: str | None, file: str | None) -> str:
    """The repository's name without -GGUF, lower case; and the quantisation as a tag."""
    name = re.sub(r"[-_.]gguf$", "", repo.split("/")[1], flags=re.IGNORECASE).lower()
    name = re.sub(r"[^a-z0-9._-]", "-", name).strip("-._") or "model"
    tag = quant or (_quant_of(file) if file else None)
    return f"{name}:{tag.lower()}" if tag else name


def _quant_of(path: str) -> str | None:
    match = re.search(r"[._-]((?:I?Q\d[A-Z0-9_]*)|F16|BF16|F32)(?:-\d{5}-of-\d{5})?\.gguf$", path, re.IGNORECASE)
    return match.group(1) if match else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(repo: str, quant: str | None, file: str | None, target: Path, *, token: str | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> tuple[list[Path], str]:
    """Download (or finish downloading) the chosen files of REPO into TARGET, each checked against its sha256;
    their paths and the commit they came from. PROGRESS(file, bytes done, bytes in all) as it goes."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import build_hf_headers

    try:
        info = HfApi(token=token).model_info(repo, files_metadata=True, token=token)
    except GatedRepoError:
        raise PullError(f"{repo} is gated: accept its terms on the hub, then set HF_TOKEN to a token of yours") \
            from None
    except RepositoryNotFoundError:
        raise PullError(f"no repository {repo} on the hub (or it is private: set HF_TOKEN)") from None
    except (HfHubHTTPError, OSError) as error:
        raise PullError(f"cannot reach the hub for {repo}: {error}") from None
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or ()}
    headers = build_hf_headers(token=token)
    paths = []
    for name in choose(list(siblings), quant, file):
        if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
            raise PullError(f"the hub lists a file named {name!r}, which would land outside {target}; not pulled")
        lfs = siblings[name].lfs
        if lfs is None:
            raise PullError(f"the hub lists no sha256 for {name}, so it cannot be checked; not pulled")
        final = target / name
        partial = final.with_name(final.name + PARTIAL)
        # A file pulled before, whole and unchanged, is not fetched again.
        if not (final.is_file() and final.stat().st_size == lfs.size and sha256_of(final) == lfs.sha256):
            _download(hf_hub_url(repo, name, revision=info.sha), headers, final, lfs.size,
                      lambda done, name=name, size=lfs.size: progress and progress(name, done, size))
            actual = sha256_of(partial)
            if actual != lfs.sha256:
                partial.unlink(missing_ok=True)
                raise PullError(f"{name} does not match its sha256 on the hub ({actual[:12]}… instead of "
                                f"{lfs.sha256[:12]}…): the download was corrupted and is deleted; run the pull again")
            os.replace(partial, final)
        paths.append(final)
    return paths, info.sha or ""


def _download(url: str, headers: dict[str, str], final: Path, size: int, progress: Callable[[int], None]) -> None:
    """FINAL's bytes into FINAL.partial, from where an earlier pull stopped (a Range request)."""
    import urllib.error
    import urllib.request

    partial = final.with_name(final.name + PARTIAL)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.exists() else 0
    if done > size:  # not a prefix of this file: start again
        partial.unlink()
        done = 0
    if done == size:
        return
    request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={done}-"} if done else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            if done and answer.status != 206:  # the server sent it all again
                done = 0
            with partial.open("r+b" if done else "wb") as out:
                out.seek(done)
                out.truncate()
                progress(done)
                while chunk := answer.read1(CHUNK):  # what has arrived: an interrupted pull keeps it
                    out.write(chunk)
                    done += len(chunk)
                    progress(done)
    except urllib.error.HTTPError as error:
        raise PullError(f"the hub answered {error.code} for {final.name}: {error.reason}") from None
    except OSError as error:
        raise PullError(f"the download of {final.name} stopped ({error}); run the same pull again to resume it") \
            from None
    if done != size:
        raise PullError(f"the download of {final.name} stopped at {done} of {size} bytes; run the same pull again "
                        "to resume it")


def target_dir(models_dir: Path, repo: str) -> Path:
    return models_dir / "hf" / repo.replace("/", "--")
