"""Hugging Face hub ids: the normal download path when online, a clear OfflineError when not."""

from __future__ import annotations

import re
from pathlib import Path

from stratos_agent.errors import InputError, OfflineError

HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

# Enough to load, train and serve a causal LM; skips pytorch_model.bin, ONNX, GGUF and TF copies.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]


def _fix_hint(repo_id: str, offline: bool) -> str:
    network = "unset HF_HUB_OFFLINE / STRATOS_OFFLINE" if offline else "allow access to huggingface.co"
    return (
        "Fix: pass a local HF folder instead (a directory with config.json), use a built-in id "
        f"(`smollm2-135m`, `smollm2-135m-half`), or {network} so `{repo_id}` is downloaded once."
    )


def hub_folder(repo_id: str, *, offline: bool) -> Path:
    """Local snapshot folder of `repo_id`: the HF cache when offline, a download when online."""
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=ALLOW_PATTERNS, local_files_only=offline))
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise InputError(f"HF hub model `{repo_id}` cannot be used: {type(exc).__name__}: {exc}") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        how = "offline mode is on (HF_HUB_OFFLINE or STRATOS_OFFLINE)" if offline else "the hub is unreachable"
        raise OfflineError(
            f"HF hub model `{repo_id}` is not in the local HF cache and {how}: tried "
            f"snapshot_download('{repo_id}', local_files_only={offline}). {_fix_hint(repo_id, offline)}"
        ) from exc
    except (OSError, httpx.HTTPError) as exc:  # connection refused, DNS failure, timeouts
        raise OfflineError(f"HF hub model `{repo_id}`: download failed ({exc}). {_fix_hint(repo_id, offline)}") from exc
