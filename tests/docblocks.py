"""The code blocks of the user docs (the README, CONTRIBUTING.md, docs/), as written.

A block fenced ``sh`` or ``python`` is something a reader runs, and a test runs it:
``tests/test_docs.py`` runs most of them against a live Keyplane; the few it cannot
(they serve, or take minutes) are run by the test ``RUN_ELSEWHERE`` names. Blocks in
any other language (``json``, ``text``) show output, and run nowhere.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    REPOSITORY / "README.md",
    REPOSITORY / "CONTRIBUTING.md",
    *sorted((REPOSITORY / "docs").glob("*.md")),
    REPOSITORY / "deploy" / "README.md",
]
RUNNABLE = ("sh", "python")
_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^ *```", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)

# (document, the heading a block sits under) -> the test that runs that block.
RUN_ELSEWHERE = {
    ("README.md", "The two commands"): "tests/test_quickstart.py",  # make serve; .ci/run: make test
    ("README.md", "Quickstart"): "tests/test_quickstart.py",
    ("docs/api.md", "A generated client"): "tests/test_generated_client.py",
    ("docs/benchmark.md", "Benchmark"): "tests/test_bench_smoke.py",  # its smoke run
    ("CONTRIBUTING.md", "Fuzzing"): "tests/test_live_fuzzing.py",
    ("CONTRIBUTING.md", "Development"): ".ci/run",
    # The production set-up changes the machine (users, /etc, services): each step runs
    # in a test of its own, with the shipped files and loopback ports.
    ("deploy/README.md", "1. Install"): "tests/test_packaging.py",
    ("deploy/README.md", "2. The database and the secret"): "tests/test_cli.py",
    ("deploy/README.md", "3. `keyplane serve` under systemd"): "tests/test_deploy.py",
    ("deploy/README.md", "4. nginx and TLS"): "tests/test_deploy.py",
    ("deploy/README.md", "5. PgBouncer"): "tests/test_pgbouncer.py",
    ("deploy/README.md", "6. Backup and restore"): "tests/test_backup.py",
    ("deploy/README.md", "7. Upgrading"): "tests/test_cli.py",
}


@dataclass(frozen=True)
class Block:
    document: Path
    heading: str
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(REPOSITORY)} under {self.heading!r}"

    @property
    def key(self) -> tuple[str, str]:
        return str(self.document.relative_to(REPOSITORY)), self.heading


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    fences = list(_FENCE.finditer(text))
    headings = [
        (m.start(), m[1].strip())
        for m in _HEADING.finditer(text)
        if not any(f.start() < m.start() < f.end() for f in fences)  # a shell comment
    ]
    found = []
    for fence in fences:
        above = [title for start, title in headings if start < fence.start()]
        code = textwrap.dedent(fence[3]) if fence[1] else fence[3]  # fenced in a list item
        found.append(Block(document, above[-1] if above else "", fence[2], code))
    return found


def block(document: str, heading: str, language: str = "sh") -> str:
    """The one ``language`` block under ``heading`` in ``document``."""
    chosen = [
        b.code
        for b in blocks(REPOSITORY / document)
        if b.heading == heading and b.language == language
    ]
    assert len(chosen) == 1, f"{document} holds {len(chosen)} {language} blocks under {heading!r}"
    return chosen[0]
