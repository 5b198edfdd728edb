"""``genlit export --push-to-hub REPO``: the exported folder as one commit of a Hugging Face model repository.

The Hub is asked first (:func:`check_hub`: online, logged in), so an offline machine or a missing login is one line
before anything is written; then the folder is written locally (atomically) and uploaded with ``huggingface_hub``'s
``upload_folder``, a single commit, so the repository shows the whole folder or none of it.
"""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_hub(repo: str) -> None:
    """One clear error unless ``repo`` is ``owner/name`` and the Hub answers with a logged-in user."""
    if not _REPO_ID.match(repo):
        raise ValueError(f"--push-to-hub {repo!r}: give a repository id owner/name, e.g. alice/genlit-vae-mnist")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("--push-to-hub: the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set); export "
                              "without --push-to-hub and upload the folder later")  # fmt: skip
    try:
        HfApi().whoami()
    except OfflineModeIsEnabled:
        raise ConnectionError("--push-to-hub: the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set); export "
                              "without --push-to-hub and upload the folder later") from None  # fmt: skip
    except LocalTokenNotFoundError:
        raise ValueError("--push-to-hub: not logged in to the Hugging Face Hub; run `hf auth login` (or set "
                              "HF_TOKEN) first") from None  # fmt: skip
    except OSError as err:  # requests' and httpx's connection errors are OSErrors
        raise ConnectionError(f"--push-to-hub: the Hugging Face Hub cannot be reached ({type(err).__name__}); "
                              "export without --push-to-hub and upload the folder later") from None  # fmt: skip


def push_folder(folder: Path, repo: str) -> str:
    """Create ``repo`` (a model repository, if missing) and upload ``folder`` as one commit; the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    commit = api.upload_folder(repo_id=repo, folder_path=folder, commit_message=f"genlit export of {folder.name}")
    return str(commit.commit_url)
