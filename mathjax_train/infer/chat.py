"""Chat messages -> prompt token ids: the checkpoint's own chat template, or a plain fallback.

With a template, the text is rendered like HF `apply_chat_template(add_generation_prompt=True)`
and tokenized without adding special tokens (the template writes them). Without one, turns are
written as `Role: text` lines ending in `Assistant:`, tokenized like a plain prompt, and the
server stops generation at the next `\\nUser:` so a base model does not write the user's turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from mathjax_train.data.templates import ChatTemplate
from mathjax_train.data.vocab import Tokenizer

FALLBACK_STOP = "\nUser:"
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class RenderedChat:
    prompt_ids: list[int]
    text: str
    implicit_stop: tuple[str, ...]  # stop strings the format itself needs


def chat_template_of(tokenizer: Tokenizer) -> ChatTemplate | None:
    """The tokenizer's chat template (named lists pick "default"), or None when it has none."""
    config = dict(tokenizer.config)
    config["chat_template"] = tokenizer.chat_template
    return ChatTemplate.from_config(config)


def plain_chat_text(messages: Sequence[Mapping[str, str]]) -> str:
    lines = [f"{_ROLE_NAMES[m['role']]}: {m['content']}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def render_chat(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> RenderedChat:
    """Token ids of the prompt for `messages` (dicts with role system/user/assistant and content)."""
    template = chat_template_of(tokenizer)
    if template is None:
        text = plain_chat_text(messages)
        return RenderedChat(tokenizer.encode(text), text, (FALLBACK_STOP,))
    text = template.render(messages, add_generation_prompt=True)
    return RenderedChat(tokenizer.encode(text, add_special_tokens=False), text, ())
