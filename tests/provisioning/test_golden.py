"""Golden files of the rendered objects of the example hubs, reviewed like code.

A change to rendering shows up as a diff of tests/provisioning/golden/*.yaml. After checking
that the diff is what you meant, regenerate them with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/provisioning/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from provisioning.render import RenderSettings, render_hub
from tests.provisioning.examples import EXAMPLES, FIXED_SECRETS

GOLDEN = Path(__file__).parent / "golden"


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (the hub's config file) as readable blocks."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rendered_yaml(name: str) -> str:
    manifests = render_hub(EXAMPLES[name], RenderSettings(), FIXED_SECRETS)
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, width=100)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rendered_objects_match_the_golden_file(name):
    golden = GOLDEN / f"{name}.yaml"
    text = rendered_yaml(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden file yet: run with UPDATE_GOLDEN=1 to write {golden}"
    assert text == golden.read_text(), f"rendering of {name} changed; see the module docstring"
