"""The edit request: the one type every method, suite and loader passes around (`fill` puts its subject in)."""

from __future__ import annotations

from dataclasses import dataclass


def fill(template: str, subject: str) -> str:
    """Put the subject into a ROME-style prompt template (`{}` marks the subject)."""
    return template.replace("{}", subject)


@dataclass(frozen=True)
class EditRequest:
    """One fact to write into a model: `prompt` is a template where `{}` marks the subject.

    CounterFact templates always contain `{}`; zsRE questions get it where the subject occurs in them
    (as ROME's zsRE loader does), and keep the question unchanged in the rare case where it does not.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    @property
    def rewrite_prompt(self) -> str:
        return fill(self.prompt, self.subject)

    def problems(self) -> list[str]:
        """What makes this request meaningless to every method (empty), however well-typed it is."""
        found = []
        if not self.subject.strip():
            found.append(f"subject {self.subject!r} is empty")
        slots = self.prompt.count("{}")
        if slots == 0 and self.subject.strip() and self.subject not in self.prompt:
            found.append(f"subject {self.subject!r} is not in the prompt {self.prompt!r}")
        if slots != 1:
            found.append(f"prompt {self.prompt!r} must mark the subject with exactly one '{{}}', has {slots}")
        if not self.target_new.strip():
            found.append(f"target_new {self.target_new!r} is empty")
        return found
