"""The diff view's rows: two YAML texts lined up, long unchanged stretches folded."""

from __future__ import annotations

from controlplane.console.sidebyside import Row, side_by_side

OLD = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: 1h\n  x509CATTL: 1h\n"
NEW = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: 2h\n  x509CATTL: 1h\n"


def kinds(rows: list[Row]) -> list[str]:
    return [r.kind for r in rows]


def test_a_changed_line_is_paired_with_its_replacement_and_numbered_on_both_sides():
    rows = side_by_side(OLD, NEW)
    assert kinds(rows) == ["same", "same", "same", "changed", "same"]
    changed = rows[3]
    assert (changed.old_no, changed.old, changed.new_no, changed.new) == (
        4,
        "  jwtKeyTTL: 1h",
        4,
        "  jwtKeyTTL: 2h",
    )


def test_added_and_removed_sections_have_one_side_only():
    assert kinds(side_by_side(None, "a: 1\nb: 2\n")) == ["added", "added"]
    removed = side_by_side("a: 1\n", None)
    assert kinds(removed) == ["removed"] and removed[0].new is None and removed[0].new_no is None


def test_unequal_replacements_pad_the_shorter_side():
    rows = side_by_side("a: 1\n", "a: 2\nb: 3\nc: 4\n")
    assert kinds(rows) == ["changed", "added", "added"]
    assert [r.new_no for r in rows] == [1, 2, 3]


def test_long_unchanged_stretches_fold_keeping_context_around_changes():
    old = "\n".join(f"line{i}: x" for i in range(100))
    new = old.replace("line50: x", "line50: y")
    rows = side_by_side(old, new, context=3)
    assert kinds(rows) == ["folded"] + ["same"] * 3 + ["changed"] + ["same"] * 3 + ["folded"]
    assert rows[0].folded == 47 and rows[-1].folded == 46
    assert rows[4].old_no == rows[4].new_no == 51


def test_identical_texts_fold_to_one_row():
    rows = side_by_side(OLD, OLD)
    assert kinds(rows) == ["folded"] and rows[0].folded == 5
