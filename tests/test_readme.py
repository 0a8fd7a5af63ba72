"""The README is the front door: keep its settings table and API list true to the code."""
from __future__ import annotations

import re

from conftest import ROOT
from settings_table import table

README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_code():
    block = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", README, re.S)
    assert block and block.group(1) == table(), "run scripts/settings_table.py and paste its output"


def test_every_route_is_documented(api_settings):
    from api.main import create_app

    app = create_app(api_settings)
    paths = set(app.openapi()["paths"])
    assert len(paths) >= 10
    for path in paths:
        documented = re.sub(r"\{[^}]+\}", "", path)
        assert documented in README or path in README, f"{path} is not in the README"


def test_the_two_commands_come_first():
    assert README.index("scripts/run.sh") < README.index("## API")
    assert README.index("scripts/test.sh") < README.index("## API")
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
