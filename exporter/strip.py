"""Export without the template: each training example keeps only what varies.

`tuneloop export --strip-template support-bot-v1 [--system-prompt TEXT]` removes a frozen
prompt template (tuneloop/prompt_template.py) from every example before it is formatted: the
system prompt, the few-shot turns, the fixed prefix and suffix of the last user message (chat
parts), and the fixed prefix and suffix of a legacy prompt (prompt parts: the example's one
user message is the logged prompt). `--system-prompt` puts a short replacement system prompt
in the template's place (for legacy prompts: in front of the prompt).

An example that does not match the template it claims to strip is SKIPPED (reason
`template_mismatch`), never kept whole: a model trained on a mix of stripped and full prompts
learns neither, and the stripped requests it will serve would look unlike its training. The
report warns with the count and the first ids, and each one's lineage record says
`"skipped": "template_mismatch:<part>"`, the part that differs (`system_prompt`, `few_shot`,
`prefix`, `suffix`, `empty`, ...); the manifest's `template.mismatches` counts them by part.

A replacement system prompt takes the place of the TEMPLATE's system prompt. When the template
has none, an example's own system message is not the template: it varies per request (a
tenant's instructions, the customer's context) and is part of what the model must learn from.
Replacing it would delete that text silently, from the training data and from the baseline's
evaluation; such an example is skipped as a mismatch with part `own_system_prompt`, counted
and named like the others (export without `--system-prompt` to keep each example's own system
message, or freeze a template that includes the system prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.examples import Example
from tuneloop.errors import TemplateMismatch
from tuneloop.prompt_template import SYSTEM_ROLES, PromptTemplate, strip_messages, strip_prompt

MISMATCH = "template_mismatch"


@dataclass(frozen=True, slots=True)
class TemplateStrip:
    template: PromptTemplate
    system_prompt: str | None = None  # a short replacement, where the template's was

    def manifest(self) -> dict[str, Any]:
        return {"ref": self.template.ref, "replacement_system_prompt": self.system_prompt}


def strip_example(example: Example, strip: TemplateStrip) -> Example:
    """The example without the template; raises :class:`TemplateMismatch`."""
    template = strip.template
    messages = list(example.messages)
    if template.has_chat_parts:
        if (strip.system_prompt is not None and template.system_prompt is None and messages
                and isinstance(messages[0], dict) and messages[0].get("role") in SYSTEM_ROLES):
            raise TemplateMismatch(
                f"the example has its own system message and template {template.ref} has no "
                "system prompt: the replacement system prompt would delete it", "own_system_prompt")
        messages = strip_messages(template, messages, system_prompt=strip.system_prompt)
    if template.has_prompt_parts:
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if len(users) != 1:
            raise TemplateMismatch(
                "a legacy template needs an example with one prompt (one user message)", "prompt"
            )
        index = users[0]
        replacement = None if template.has_chat_parts else strip.system_prompt
        content = strip_prompt(template, messages[index].get("content"), replacement=replacement)
        messages[index] = {**messages[index], "content": content}
    return example._replace(messages=messages)
