"""Registry-style docs generated from the provider's schema: `python -m controlplane.terraform.docs`.

Writes `docs/index.md`, `docs/resources/<name>.md` and `docs/data-sources/<name>.md` in the
layout the Terraform Registry reads (the same one `tfplugindocs` writes): front matter, the
description, an example from `docs/examples/`, optional hand-written notes from
`docs/templates/` (`<name>.md`, or the files a class names in `NOTES`, in order), and the argument and attribute reference (Required / Optional / Read-Only,
nested object attributes) taken from the schemas the provider serves, so the docs cannot drift
from the code. `--check` writes nothing and exits 1 when a page differs (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tf import schema, types
from tf.utils import Diagnostics

from controlplane.terraform.provider import SpirlProvider
from controlplane.terraform.tftypes import Field, NestedAttribute, Object

__all__ = ["DOCS", "render_all", "type_name"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
PROVIDER = "spirl"


def type_name(kind: Any) -> str:
    """`String`, `Number`, `Bool`, `Map of String`, `List of Object` ... as tfplugindocs says."""
    if isinstance(kind, Object):
        return "Object"
    if isinstance(kind, types.Map):
        return f"Map of {type_name(kind.element_type)}"
    if isinstance(kind, types.Set):
        return f"Set of {type_name(kind.element_type)}"
    if isinstance(kind, types.List):
        return f"List of {type_name(kind.element_type)}"
    if isinstance(kind, types.Bool):
        return "Bool"
    if isinstance(kind, types.Number):
        return "Number"
    return "String"


def _object_of(kind: Any) -> Object | None:
    while isinstance(kind, types.List | types.Map):
        kind = kind.element_type
    return kind if isinstance(kind, Object) else None


def _group(attribute: schema.Attribute) -> str:
    if attribute.required:
        return "Required"
    if attribute.optional:
        return "Optional"
    return "Read-Only"


def _bullet(
    name: str, kind: Any, description: str, *, sensitive: bool = False, nested: bool = False
) -> str:
    # A nested attribute is "Attributes" in tfplugindocs' words; an object-typed one "Object".
    flags = ("Attributes" if nested else type_name(kind)) + (", Sensitive" if sensitive else "")
    below = f" (see [below for nested schema](#nestedatt--{name}))" if _object_of(kind) else ""
    return f"- `{name}` ({flags}) {description}{below}"


def _reference(attributes: list[schema.Attribute]) -> list[str]:
    lines = ["## Schema", ""]
    for group in ("Required", "Optional", "Read-Only"):
        members = sorted((a for a in attributes if _group(a) == group), key=lambda a: a.name)
        if not members:
            continue
        lines += [f"### {group}", ""]
        lines += [
            _bullet(
                a.name,
                a.type,
                a.description or "",
                sensitive=bool(a.sensitive),
                nested=isinstance(a, NestedAttribute),
            )
            for a in members
        ]
        lines.append("")
    for attribute in sorted(attributes, key=lambda a: a.name):
        nested = _object_of(attribute.type)
        if nested is None:
            continue
        lines += [
            f'<a id="nestedatt--{attribute.name}"></a>',
            f"### Nested Schema for `{attribute.name}`",
            "",
            "Optional:" if isinstance(attribute, NestedAttribute) else "Read-Only:",
            "",
        ]
        lines += [_bullet(f.name, f.type, f.description) for f in _sorted(nested.fields)]
        lines.append("")
    return lines


def _sorted(fields: Iterable[Field]) -> list[Field]:
    return sorted(fields, key=lambda f: f.name)


def _optional_file(path: Path) -> list[str]:
    return [path.read_text().rstrip("\n"), ""] if path.exists() else []


def _example(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"every page needs an example: {path} is missing")
    return ["## Example Usage", "", "```terraform", path.read_text().rstrip("\n"), "```", ""]


def _page(
    *,
    title: str,
    heading: str,
    description: str,
    attributes: list[schema.Attribute],
    example: Path,
    notes: Sequence[Path],
    import_ids: tuple[str, ...] = (),
    address: str = "",
) -> str:
    summary = description.split(". ")[0].rstrip(".") + "."
    lines = [
        "---",
        f'page_title: "{title}"',
        "description: |-",
        f"  {summary}",
        "---",
        "",
        f"# {heading}",
        "",
        description,
        "",
        *_example(example),
        *(line for path in notes for line in _optional_file(path)),
        *_reference(attributes),
    ]
    if import_ids:
        lines += [
            "## Import",
            "",
            "Import by id or by name:",
            "",
            "```shell",
            *(f"terraform import {address} {i}" for i in import_ids),
            "```",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_all(docs: Path = DOCS) -> dict[Path, str]:
    """Every page, by path under `docs`."""
    provider = SpirlProvider()
    pages: dict[Path, str] = {}
    top = provider.get_provider_schema(Diagnostics())
    pages[docs / "index.md"] = _page(
        title=f"Provider: {PROVIDER}",
        heading=f"{PROVIDER} Provider",
        description=top.description or "",
        attributes=top.attributes,
        example=docs / "examples" / "provider.tf",
        notes=[docs / "templates" / "index.md"],
    )
    for kind, folder, classes in (
        ("Resource", "resources", provider.get_resources()),
        ("Data Source", "data-sources", provider.get_data_sources()),
    ):
        for klass in classes:
            name = f"{provider.get_model_prefix()}{klass.get_name()}"
            spec = klass.get_schema()
            import_ids = tuple(getattr(klass, "IMPORT", ())) if kind == "Resource" else ()
            pages[docs / folder / f"{klass.get_name()}.md"] = _page(
                title=f"{name} {kind} - {PROVIDER}",
                heading=f"{name} ({kind})",
                description=spec.description or "",
                attributes=spec.attributes,
                example=docs / "examples" / folder / f"{name}.tf",
                notes=[
                    docs / "templates" / folder / f"{note}.md"
                    for note in getattr(klass, "NOTES", (klass.get_name(),))
                ],
                import_ids=import_ids,
                address=f"{name}.example",
            )
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.terraform.docs",
        description="Write the provider's registry docs (docs/) from its schema.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 on a difference"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="docs folder (default: ./docs)")
    args = parser.parse_args(argv)
    pages = render_all(args.docs)
    stale = [path for path, text in pages.items() if not path.exists() or path.read_text() != text]
    generated = {p for p in pages}
    extra = [
        path
        for folder in ("resources", "data-sources")
        for path in sorted((args.docs / folder).glob("*.md"))
        if path not in generated
    ]
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        for path in extra:
            print(f"documents nothing the provider has: {path}", file=sys.stderr)
        if stale or extra:
            print("run: python -m controlplane.terraform.docs", file=sys.stderr)
            return 1
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[path])
        print(f"wrote {path}")
    for path in extra:
        path.unlink()
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
