"""Tags and hashes of a synthesis run.

A chunk's key hashes the prompt templates (and the number of questions) with the chunk's
text, so a rerun finds the work of earlier runs by the tag `chunk:<key>` whatever the file is
called now, and a changed template starts over. A question's key hashes its normalized text:
questions equal up to case, whitespace and punctuation share it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from tuneloop.errors import ConfigError

TAG_PATTERN = re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")
MAX_TAG = 64
SYNTHETIC_TAG = "synthetic"
QUESTIONS_STEP_TAG = "synthesize:questions"
ANSWER_STEP_TAG = "synthesize:answer"
_UNSAFE = re.compile(r"[^A-Za-z0-9:_.-]+")


def sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def checked_tag(tag: str) -> str:
    if not TAG_PATTERN.match(tag):
        raise ConfigError(f"invalid tag {tag[:80]!r}: a tag is 1-64 characters of "
                          "A-Z a-z 0-9 : _ . -")
    return tag


def source_tag(name: str) -> str:
    """`src:<slug of the document's name>`, valid as a tag; long names keep their start and
    get a hash of the whole name."""
    slug = _UNSAFE.sub("-", name).strip("-.:") or "document"
    tag = f"src:{slug}"
    if len(tag) <= MAX_TAG:
        return tag
    digest = sha(name)[:10]
    return f"src:{slug[:MAX_TAG - len('src:') - len(digest) - 1].rstrip('-.:')}-{digest}"


def chunk_key(template_hash: str, text: str) -> str:
    return sha(template_hash, text)[:12]


def chunk_tag(key: str) -> str:
    return f"chunk:{key}"


def normalize_question(text: str) -> str:
    """Case folded, punctuation dropped, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(c if c.isalnum() else " " for c in folded)
    return " ".join(kept.split())


def question_key(text: str) -> str:
    return sha(normalize_question(text))[:12]


def question_tag(key: str) -> str:
    return f"q:{key}"
