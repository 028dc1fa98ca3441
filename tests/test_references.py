"""The repository stands alone: every file or module a comment or docstring names is
in it, and so is every attribute it names of one of the project's own modules."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.docblocks import REPOSITORY

PACKAGES = ("db", "handlers", "keyplane", "bench", "tests")
SOURCES = sorted(
    path
    for package in PACKAGES
    for path in (REPOSITORY / package).rglob("*.py")
    if "node_modules" not in path.parts
)
# `db.api_keys.change`, `keyplane.app.Contract`: a project module, then maybe a name in it.
_DOTTED = re.compile(rf"(?<![\w.])((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)")
# `tests/test_docs.py`, `bench/results/README.md`, `CONTRIBUTING.md`.
_PATH = re.compile(
    r"(?<![\w/.<-])((?:[\w.-]+/)*[\w-]+\.(?:py|md|yaml|yml|toml|json|lua|png|ini|mako))\b"
)
# Names of files kept outside this repository, which no comment may lean on.
_ELSEWHERE = re.compile(r"\bDESIGN\b|CONNEXION-NOTES|\bseed 00\d|\.\./shared")
# Dotted words that are not modules: a SQLite file's name, and its secret beside it.
_NOT_MODULES = {"keyplane.db", "keyplane.db.secret", "keyplane.verify"}  # files; a permission


def _prose(path: Path) -> list[tuple[int, str]]:
    """The comments and docstrings of a Python file, with their line numbers."""
    source = path.read_text()
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring and node.body:
                found.append((node.body[0].lineno, docstring))
    return found


def _module_file(parts: list[str]) -> tuple[Path | None, list[str]]:
    """The longest prefix of ``parts`` that is a module or package, and the rest."""
    for cut in range(len(parts), 0, -1):
        base = REPOSITORY.joinpath(*parts[:cut])
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py"), parts[cut:]
        if (base / "__init__.py").is_file():
            return base / "__init__.py", parts[cut:]
    return None, parts


def _defines(module: Path, name: str) -> bool:
    return name in _top_level_names(module) or any(
        (module.parent / sub).exists() for sub in (name, f"{name}.py")
    )


def _top_level_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def _exists(reference: str, near: Path) -> bool:
    candidates = [REPOSITORY / reference, near.parent / reference, REPOSITORY / "docs" / reference]
    return any(candidate.exists() for candidate in candidates)


def _problems(path: Path) -> list[str]:
    problems = []
    for line, text in _prose(path):
        where = f"{path.relative_to(REPOSITORY)}:{line}"
        if match := _ELSEWHERE.search(text):
            problems.append(f"{where} names something outside the repository: {match[0]!r}")
        for reference in _DOTTED.findall(text):
            reference = reference.rstrip(".")
            if reference in _NOT_MODULES or reference.endswith((".py", ".md", ".toml")):
                continue
            module, rest = _module_file(reference.split("."))
            if module is None:
                problems.append(f"{where} names a module that does not exist: {reference}")
            elif rest and not _defines(module, rest[0]):
                problems.append(f"{where}: {module.relative_to(REPOSITORY)} has no {rest[0]}")
        for reference in _PATH.findall(text):
            if not _exists(reference, path):
                problems.append(f"{where} names a file that does not exist: {reference}")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_every_file_and_module_a_comment_names_exists(path: Path):
    assert _problems(path) == []


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = REPOSITORY / "tests" / "_a_file_that_names_ghosts.py"
    bad.write_text(
        '"""See DESIGN §2, ``db.verification``, ``db.api_keys.no_such_thing`` and '
        'docs/nowhere.md."""\n'
    )
    try:
        problems = _problems(bad)
    finally:
        bad.unlink()
    assert len(problems) == 4, problems
