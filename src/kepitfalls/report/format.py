"""How numbers and text are written into the tables (Markdown as is, LaTeX escaped)."""

from __future__ import annotations

#: Marks a smoke value: a cell resting on fewer than `report.min_n` records.
SMOKE = "†"


def number(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def tex(text: str) -> str:
    text = text.replace("\\", "\\textbackslash{}")
    for char in "_%&#$":
        text = text.replace(char, "\\" + char)
    return text.replace("↑", "$\\uparrow$").replace("↓", "$\\downarrow$").replace(SMOKE, "$^\\dagger$")
