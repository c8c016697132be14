"""Refresh README.md's results section (between its markers) from the rendered reports.

The README keeps a short summary — what ran, links to the full tables in reports/, and the findings table —
because the tables themselves (every cell with its interval and n) are too wide to read there.
Run after `dvc repro`, before committing.
"""

from __future__ import annotations

import re

from kepitfalls.params import PROJECT_ROOT
from kepitfalls.report.layout import TABLES

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main() -> None:
    readme = PROJECT_ROOT / "README.md"
    reports = PROJECT_ROOT / "reports"
    links = [f"- [{table.title}](reports/{table.name}.md) ([LaTeX](reports/{table.name}.tex), [CSV](reports/{table.name}.csv))"
             for table in TABLES]
    if (reports / "figure4.png").is_file():
        links.append("- [Figure 4: general abilities after sequential edits, and perplexity](reports/figure4.md) "
                     "([SVG](reports/figure4.svg)), our lines solid beside the survey's (dashed, read off its plot):")
        links.extend(["", "![Figure 4 on the default run](reports/figure4.png)"])
    findings = (reports / "findings.md").read_text(encoding="utf-8")
    findings = re.sub(r"^# .*\n", "", findings, count=1).split("\nSources")[0].strip()
    section = "\n".join(["", "Full tables, every cell as `value [95% interval] n=records` beside the survey's number:", "",
                         *links, "", "### Survey findings, tested ([reports/findings.md](reports/findings.md))", "",
                         findings, ""])
    body = readme.read_text(encoding="utf-8")
    start, stop = body.index(BEGIN) + len(BEGIN), body.index(END)
    readme.write_text(body[:start] + section + body[stop:], encoding="utf-8")


if __name__ == "__main__":
    main()
