"""The docs cannot drift: the configuration reference is what the settings
declaration generates, README.md's links work on the package index page, the
links between the docs pages lead somewhere, and nothing refers to a file
outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from wsgi_fcgi import settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REPOSITORY = "https://github.com/wsgi-fcgi/wsgi_fcgi"
GENERATED_START = "<!-- generated: python -m wsgi_fcgi.settings"
GENERATED_END = "<!-- end of generated reference -->"

#: [text](target) and ![alt](target), <img src="target">, and [label]: target definitions
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]+src=[\"']([^\"']+)[\"']"
                  r"|^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
#: `inline code` and fenced blocks hold no links
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def links(path: Path) -> list:
    text = CODE.sub("", path.read_text())
    return [next(group for group in match.groups() if group) for match in LINK.finditer(text)]


def markdown_pages() -> list:
    return [README, *sorted(DOCS.rglob("*.md"))]


def generated_reference() -> str:
    return subprocess.run([sys.executable, "-m", "wsgi_fcgi.settings"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip() + "\n"


def reference_span(text: str) -> tuple:
    return text.index("\n", text.index(GENERATED_START)) + 1, text.index(GENERATED_END)


def test_configuration_reference_is_what_the_settings_generate():
    generated = generated_reference()
    text = (DOCS / "configuration.md").read_text()
    start, end = reference_span(text)
    assert text[start:end] == generated, (
        "docs/configuration.md is out of date: `make docs` regenerates it")
    for setting in settings.SETTINGS:
        assert "`%s" % setting.flag in generated


def test_readme_shows_the_limits_table_as_declared():
    assert settings.markdown_table(settings.LIMITS) in README.read_text(), (
        "README.md's Limits table differs from `python -m wsgi_fcgi.settings` (section Limits)")


def test_readme_links_are_absolute_so_they_work_on_the_package_index():
    found = links(README)
    assert found, "no link found: the pattern is broken"
    relative = [target for target in found if not target.startswith(("https://", "http://", "mailto:"))]
    assert relative == [], "README.md is the package's long description: use %s/blob/main/..." % REPOSITORY


def test_readme_links_into_the_repository_name_existing_files():
    prefix = re.compile(re.escape(REPOSITORY) + r"/(?:blob|tree)/main/([^#?]+)")
    targets = [prefix.match(target) for target in links(README)]
    paths = [unquote(match.group(1)).rstrip("/") for match in targets if match]
    assert paths, "the README should link the docs"
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert missing == []


@pytest.mark.parametrize("page", [p for p in markdown_pages() if p != README], ids=lambda p: p.name)
def test_relative_links_in_the_docs_lead_to_existing_files(page):
    broken = []
    for target in links(page):
        if target.startswith(("https://", "http://", "mailto:", "#")):
            continue
        path = unquote(target.partition("#")[0])
        if not (page.parent / path).exists():
            broken.append(target)
    assert broken == [], "%s links to missing files" % page.relative_to(ROOT)


def test_nothing_refers_to_files_outside_the_repository():
    outside = ("CONTRACT" + ".md", "../" + "shared", "shared" + "/bench")  # split: this file is scanned too
    offenders = []
    for folder in ("wsgi_fcgi", "tests", "docs", "examples", "benchmarks", "deploy", "nginx", "frontends"):
        for path in (ROOT / folder).rglob("*"):
            if "results" in path.parts:  # benchmark records keep the command lines they ran
                continue
            if path.suffix in (".py", ".md", ".conf", ".txt", ".sh", ".toml", ".yaml", "") and path.is_file():
                text = path.read_text(errors="replace")
                offenders += ["%s: %s" % (path.relative_to(ROOT), word) for word in outside if word in text]
    text = README.read_text()
    offenders += ["README.md: %s" % word for word in outside if word in text]
    assert offenders == []


def regenerate() -> None:
    """`make docs`: rewrite the generated reference in docs/configuration.md."""
    path = DOCS / "configuration.md"
    text = path.read_text()
    start, end = reference_span(text)
    path.write_text(text[:start] + generated_reference() + text[end:])


if __name__ == "__main__":
    regenerate()
