"""The registry docs in docs/ are what the generator makes of the provider's schema today, and
every attribute (nested object attributes too) has a description. No Terraform needed: the
comparison with the schema Terraform actually receives is in test_install.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tf.utils import Diagnostics

from controlplane.terraform.docs import DOCS, render_all
from controlplane.terraform.provider import SpirlProvider
from controlplane.terraform.tftypes import Object

pytestmark = pytest.mark.terraform


def test_docs_match_the_schema() -> None:
    pages = render_all()
    stale = [str(path) for path, text in pages.items() if path.read_text() != text]
    assert not stale, f"run `python -m controlplane.terraform.docs`: {stale}"
    on_disk = {p for folder in ("resources", "data-sources") for p in (DOCS / folder).glob("*.md")}
    assert on_disk == set(pages) - {DOCS / "index.md"}
    # The command the message names reports the same.
    check = subprocess.run(
        [sys.executable, "-m", "controlplane.terraform.docs", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_docs_check_fails_on_a_difference(tmp_path) -> None:
    import shutil

    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    page = copy / "resources" / "cluster_config.md"
    page.write_text(page.read_text().replace("(Map of String)", "(Map of Number)"))
    (copy / "resources" / "gone.md").write_text("# spirl_gone\n")
    check = subprocess.run(
        [sys.executable, "-m", "controlplane.terraform.docs", "--check", "--docs", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1
    assert str(page) in check.stderr and "gone.md" in check.stderr


def test_every_attribute_has_a_description() -> None:
    provider = SpirlProvider()
    schemas = {"provider": provider.get_provider_schema(Diagnostics())}
    for klass in [*provider.get_resources(), *provider.get_data_sources()]:
        schemas[klass.get_name()] = klass.get_schema()
    missing = []
    for owner, spec in schemas.items():
        if not spec.description:
            missing.append(owner)
        for attribute in spec.attributes:
            if not attribute.description:
                missing.append(f"{owner}.{attribute.name}")
            kind = attribute.type
            while not isinstance(kind, Object) and hasattr(kind, "element_type"):
                kind = kind.element_type
            if isinstance(kind, Object):
                missing += [
                    f"{owner}.{attribute.name}.{f.name}" for f in kind.fields if not f.description
                ]
    assert missing == []
