"""How text becomes search terms: the one analyzer that both the index and queries use.

- Both sides are Unicode-normalized: NFKC (full-width Latin, half-width kana, ligatures become
  their plain forms) and case-folded (`Straße` finds `strasse`).
- Scripts written without spaces between words (Han, Hiragana, Katakana, Hangul, Thai) are
  cut into overlapping character bigrams, and each character is also a unigram:
  `パスワード` → パス スワ ワー ード (+ パ ス ワ ー ド). A query in those scripts is cut the same
  way and every bigram must be present, so any substring of two or more characters is found,
  and a one-character query finds its unigram. (The bigrams of a query are checked as a set,
  not as adjacent positions: a text holding them apart also matches; rare in practice.)
- Every other text is words: runs of letters, combining marks, digits and `_`, of at most
  MAX_TERM_LENGTH characters (longer runs, like base64 blobs, are left out). Words of plain
  ASCII letters are reduced to their English stem (Snowball's Porter2, from PyStemmer), so
  `refund`, `refunds` and `refunded` are one term; other words are kept as they are.
- A term is stored as a 64-bit key (blake2b): collisions are out of practical reach.

Batches are tokenized by Arrow (C++) and numpy; only the distinct terms of a batch are
stemmed and hashed in Python.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import Stemmer

MAX_TERM_LENGTH = 64
MAX_TEXT_CHARS = 1_000_000
# the scripts cut into characters; ー 々 〆 〇 are "Common" script but written inside words
SEGMENTED = (r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}"
             r"\x{3005}-\x{3007}\x{30FC}\x{3031}-\x{3035}")
_SEGMENTED_RUN = f"([{SEGMENTED}]+)"
_NOT_WORD = r"[^\p{L}\p{M}\p{N}_]+"
_ASCII_WORD = "^[a-z]+$"
_BIGRAM_FLAG = np.uint64(1 << 42)  # code points fit in 21 bits: unigram cp, bigram flag|a|b


def term_key(term: str) -> int:
    """A stable signed 64-bit key (blake2b) of a term."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def normalize(text: str) -> str:
    """NFKC, case-folded (and NFKC again: folding can undo it)."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def stems(words: Sequence[str]) -> list[str]:
    """English stems of normalized words of ASCII letters; other words unchanged."""
    english = [n for n, w in enumerate(words) if w.isascii() and w.isalpha()]
    # no cache: PyStemmer's cache makes a batch slower, not faster
    stemmed = Stemmer.Stemmer("english", 0).stemWords([words[n] for n in english])
    out = list(words)
    for n, stem in zip(english, stemmed, strict=True):
        out[n] = stem
    return out


@dataclass(frozen=True)
class Tokens:
    """The tokens of some texts, in order: each with the index of its text, and whether it is
    a run of a segmented script (cut into grams) or a word."""
    text_index: np.ndarray
    tokens: pa.Array
    segmented: np.ndarray


_WORD_BYTES = np.zeros(256, np.bool_)  # [A-Za-z0-9_]: what _NOT_WORD leaves of ASCII text
for _first, _last in ((b"a", b"z"), (b"A", b"Z"), (b"0", b"9"), (b"_", b"_")):
    _WORD_BYTES[_first[0]:_last[0] + 1] = True
_WORD_BYTES.setflags(write=False)


def _ascii_words(texts: Sequence[str], index: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """The words of ASCII texts (`index`: the number of each text), split as the regex path
    splits them (runs of [A-Za-z0-9_] of at most MAX_TERM_LENGTH), in numpy: a pass over the
    bytes instead of a regex split, several times faster."""
    if not texts:
        return np.zeros(0, np.int64), pa.array([], pa.large_string())
    joined = np.frombuffer(" ".join(texts).encode("ascii"), np.uint8)
    word = _WORD_BYTES[joined]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    text_starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    text_of = index[np.searchsorted(text_starts, starts, side="right") - 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    words = pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets),
                                             pa.py_buffer(joined[word].tobytes()))
    keep = lengths <= MAX_TERM_LENGTH
    return text_of[keep].astype(np.int64), words.filter(pa.array(keep))


def tokenize(texts: Sequence[str]) -> Tokens:
    normalized = [normalize(t[:MAX_TEXT_CHARS]) for t in texts]
    is_ascii = np.fromiter((t.isascii() for t in normalized), np.bool_, len(normalized))
    ascii_index = np.flatnonzero(is_ascii)
    ascii_index_, ascii_words = _ascii_words([normalized[n] for n in ascii_index], ascii_index)
    other_index = np.flatnonzero(~is_ascii)
    if len(other_index) == 0:
        return Tokens(ascii_index_, ascii_words, np.zeros(len(ascii_words), np.bool_))
    other = pa.array([normalized[n] for n in other_index], pa.string())
    # runs of segmented scripts become tokens of their own
    other = pc.replace_substring_regex(other, pattern=_SEGMENTED_RUN, replacement=r" \1 ")
    split = pc.split_pattern_regex(other, pattern=_NOT_WORD)
    tokens = pc.list_flatten(split)
    length = pc.utf8_length(tokens)
    keep = pc.and_(pc.greater(length, 0), pc.less_equal(length, MAX_TERM_LENGTH))
    segmented = pc.and_(pc.invert(pc.string_is_ascii(tokens)),
                        pc.match_substring_regex(tokens, f"^[{SEGMENTED}]"))
    # runs of a segmented script are kept whole, however long
    keep = pc.or_(keep, pc.and_(segmented, pc.greater(length, 0)))
    parents = other_index[pc.filter(pc.list_parent_indices(split), keep).to_numpy()]
    return Tokens(np.concatenate([ascii_index_, parents]).astype(np.int64),
                  pa.concat_arrays([ascii_words,
                                    pc.filter(tokens, keep).cast(pa.large_string())]),
                  np.concatenate([np.zeros(len(ascii_words), np.bool_),
                                  pc.filter(segmented, keep).to_numpy(zero_copy_only=False)]))


def gram_codes(runs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The unigram and bigram codes of runs of a segmented script, with the run of each."""
    if not runs:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    points = np.frombuffer("".join(runs).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    run_of = np.repeat(np.arange(len(runs)), [len(r) for r in runs])
    pair = run_of[1:] == run_of[:-1]
    bigrams = _BIGRAM_FLAG | (points[:-1][pair] << np.uint64(21)) | points[1:][pair]
    return (np.concatenate([run_of, run_of[:-1][pair]]),
            np.concatenate([points, bigrams]))


def gram_text(code: int) -> str:
    if code & int(_BIGRAM_FLAG):
        return chr((code >> 21) & 0x1FFFFF) + chr(code & 0x1FFFFF)
    return chr(code)


def grams(run: str) -> list[str]:
    """The bigrams of one run (its unigram when it is one character), in order."""
    if len(run) == 1:
        return [run]
    return [run[k:k + 2] for k in range(len(run) - 1)]


@dataclass(frozen=True)
class Terms:
    """Every term of some texts, repeats included: the index of its text and its code, an
    index into `keys`. The first `len(words)` codes are words (to their term's key; for
    prefix search, with the first text each occurs in); the rest are grams."""
    text_index: np.ndarray
    codes: np.ndarray
    keys: np.ndarray
    words: list[str]
    word_first_text: np.ndarray


def terms(texts: Sequence[str]) -> Terms:
    tokens = tokenize(texts)
    is_run = tokens.segmented
    word_index = tokens.text_index[~is_run]
    encoded = pc.dictionary_encode(pc.filter(tokens.tokens, pa.array(~is_run)))
    words = encoded.dictionary.to_pylist()
    word_keys = np.array([term_key(s) for s in stems(words)], dtype=np.int64)
    word_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    run_parent, grams_found = gram_codes(pc.filter(tokens.tokens, pa.array(is_run)).to_pylist())
    distinct, inverse = np.unique(grams_found, return_inverse=True)
    gram_keys = np.array([term_key(gram_text(int(c))) for c in distinct], dtype=np.int64)
    first = np.full(len(words), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, word_codes, word_index.astype(np.int64))
    return Terms(
        text_index=np.concatenate([word_index, tokens.text_index[is_run][run_parent]]
                                  ).astype(np.int64),
        codes=np.concatenate([word_codes, len(words) + inverse.astype(np.int64)]),
        keys=np.concatenate([word_keys, gram_keys]), words=words, word_first_text=first)


def terms_of(text: str) -> list[str]:
    """The distinct terms of one text (stems and grams), sorted: what the index holds."""
    tokens = tokenize([text])
    out: set[str] = set()
    words = [t for t, run in zip(tokens.tokens.to_pylist(), tokens.segmented, strict=True)
             if not run]
    out.update(stems(words))
    for run, is_run in zip(tokens.tokens.to_pylist(), tokens.segmented, strict=True):
        if is_run:
            out.update(run)
            out.update(grams(run) if len(run) > 1 else [])
    return sorted(out)
