"""A scriptable pairwise judge for the fake OpenAI upstream.

``state.judges[model] = FakeJudge(...)`` makes chat requests for that model answer as a judge
of tuneloop's judge prompt (exporter/judge_prompt.py): it reads the two answers between the
``<<<ANSWER A>>>`` / ``<<<ANSWER B>>>`` markers of the last user message and replies
``{"verdict": "A" | "B" | "tie", "reason": "..."}``. Behaviours:

- ``prefer="text"``: the answer containing the text wins (both or neither: a tie);
- ``coin=True``: A or B by a hash of ``seed`` and the prompt: a fair coin, the same flip for
  the same prompt whatever the order requests arrive in;
- ``position_a=True``: always "A", whatever the answers (a position-biased judge);
- ``garbage=True``: prose instead of JSON, always; ``garbage_first=True``: prose the first
  time a prompt is seen, then the verdict of the other settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

_ANSWER = {side: re.compile(rf"<<<ANSWER {side}>>>\n(.*?)\n<<<END ANSWER {side}>>>", re.DOTALL)
           for side in ("A", "B")}


@dataclass
class FakeJudge:
    prefer: str | None = None
    coin: bool = False
    seed: int = 0
    position_a: bool = False
    garbage: bool = False
    garbage_first: bool = False
    seen: set[str] = field(default_factory=set)
    asked: int = 0

    def verdict(self, prompt: str, answers: dict[str, str]) -> str:
        if self.position_a:
            return "A"
        if self.coin:
            digest = hashlib.sha256(f"{self.seed}:{prompt}".encode()).digest()
            return "A" if digest[0] % 2 == 0 else "B"
        if self.prefer is None:
            return "tie"
        a, b = (self.prefer in answers[side] for side in ("A", "B"))
        return "A" if a and not b else "B" if b and not a else "tie"

    def reply(self, messages: list[dict[str, Any]]) -> str:
        self.asked += 1
        last = messages[-1].get("content") if messages else ""
        prompt = last if isinstance(last, str) else ""
        first_time = prompt not in self.seen
        self.seen.add(prompt)
        if self.garbage or (self.garbage_first and first_time):
            return "Answer A is clearly the better one, because it is more helpful."
        answers = {side: (m.group(1) if (m := pattern.search(prompt)) else "")
                   for side, pattern in _ANSWER.items()}
        verdict = self.verdict(prompt, answers)
        quoted = answers["A"][:60]  # as real judges do, the reason quotes an answer
        return json.dumps({"verdict": verdict,
                           "reason": f"fake judge says {verdict}; A said {quoted!r}"})
