"""tiktoken offline, and which encoding a model uses: shared by the proxy (token estimates for
streams that report no usage) and the exporter (exact counts for training files).

tiktoken downloads its BPE files on first use; without network it finds them through
`TIKTOKEN_CACHE_DIR`, pointed here at the copies litellm ships unless the user set it.
Chat framing follows OpenAI's counting recipe: 3 tokens a message plus its role, 1 more for a
name, 3 to prime the answer.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


def base_model(model: str) -> str:
    """`ft:gpt-4o-mini-2024-07-18:org::abc` -> `gpt-4o-mini-2024-07-18`."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model


def encoding_for(model: str) -> str:
    name = base_model(model)
    return (
        "o200k_base" if name.startswith(("gpt-4o", "gpt-4.1", "o1", "o3", "o4")) else "cl100k_base"
    )


def point_tiktoken_at_bundled_files() -> None:
    """Use litellm's bundled BPE files unless the user chose a cache directory."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return
    bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    if bundled.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)


@lru_cache(maxsize=4)
def load_encoding(name: str) -> tiktoken.Encoding:
    """One encoding per process (loading o200k_base takes ~0.7 s). Raises what tiktoken raises
    when the files can't be found; callers turn that into their own error."""
    point_tiktoken_at_bundled_files()
    return tiktoken.get_encoding(name)
