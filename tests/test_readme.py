"""The docs are a house a newcomer reads in an hour: keep them short, linked and true to the code.

README.md is the front door (the two commands first, at most 250 lines); api/README.md lists
every route; deploy/configuration.md holds the settings tables that
``python -m scripts.settings_table --write`` generates; every relative link points at a file.
"""
from __future__ import annotations

import re
import subprocess

from conftest import ROOT

from scripts.settings_table import block, rows, table

README = (ROOT / "README.md").read_text()
API_README = (ROOT / "api" / "README.md").read_text()
CONFIGURATION = (ROOT / "deploy" / "configuration.md").read_text()
README_MAX_LINES = 250


def test_settings_table_matches_the_code():
    assert block(CONFIGURATION) == table(), \
        "deploy/configuration.md is out of date: run python -m scripts.settings_table --write"


def test_the_readmes_essential_settings_keep_the_codes_defaults():
    defaults = {name: default for name, _, default, _ in rows()}
    section = README[README.index("## Essential settings"):]
    section = section[:section.index("\n## ", 1)]
    found = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", section, re.M)
    assert len(found) >= 8
    for name, default in found:
        assert name in defaults, f"README's essential settings name {name}, which is no setting"
        assert default.strip() == defaults[name], f"README gives {name} the default {default.strip()}"
    assert "deploy/configuration.md" in section


def test_every_route_is_documented(api_settings):
    from api.main import create_app

    app = create_app(api_settings)
    paths = set(app.openapi()["paths"])
    assert len(paths) >= 10
    for path in paths:
        documented = re.sub(r"\{[^}]+\}", "", path)
        assert documented in API_README or path in API_README, f"{path} is not in api/README.md"


def test_the_two_commands_come_first():
    first_section = README.index("\n## ")
    assert README.startswith("## Two commands", first_section + 1), "the first section is not the two commands"
    tour = README.index("\n## A five-minute tour")
    assert first_section < README.index("scripts/run.sh") < tour
    assert first_section < README.index("scripts/test.sh") < tour
    assert "scripts/run.sh --smoke" in README[:tour]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_short():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}: move the detail out"


def markdown_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


# [text](target) and [text](target "title"), not images' data; reference definitions [x]: target
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def relative_links(text: str) -> list[str]:
    text = FENCE.sub("", text)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold commands, not links
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"(https?:|mailto:|#)", t)]


def test_the_link_finder_finds_links():
    text = "See [a](api/README.md#x), ![pic](p.png), [web](https://x.y), [m](mailto:a@b), [top](#t),\n" \
           "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n[ref]: deploy/README.md\n"
    assert relative_links(text) == ["api/README.md#x", "p.png", "deploy/README.md"]


def test_every_relative_link_resolves():
    files = markdown_files()
    expected = {"README.md", "api/README.md", "batcher/README.md", "deploy/README.md", "scripts/README.md",
                "deploy/configuration.md", "tests/data/README.md"}
    assert expected <= set(files), f"missing: {sorted(expected - set(files))}"
    broken = []
    for name in files:
        source = ROOT / name
        for target in relative_links(source.read_text()):
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not (source.parent / path).resolve().exists():
                broken.append(f"{name}: {target}")
    assert not broken, "links to nothing: " + ", ".join(broken)
