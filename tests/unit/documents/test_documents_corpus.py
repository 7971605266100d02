"""Every bad document of tests/corpus/bad is refused the way expected.yaml says."""

from __future__ import annotations

import os

import pytest

from controlplane.documents import DocumentValidationError, InputRejectedError, parse_sections

from corpus.bad_corpus import BAD_DIR, BadCase, load_cases

CASES = load_cases()


def test_corpus_is_complete() -> None:
    files = {n for n in os.listdir(BAD_DIR) if n not in ("README.md", "expected.yaml")}
    listed = {case.name for case in CASES if not case.name.startswith("gen-")}
    assert files == listed
    assert len(files) >= 30


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_document_is_refused(case: BadCase) -> None:
    if case.kind == "input_rejected":
        with pytest.raises(InputRejectedError) as rejected:
            parse_sections(case.data, scope=case.scope)
        assert case.reason in rejected.value.reason
        assert rejected.value.too_large is case.too_large
        return
    assert case.kind == "validation_failed"
    with pytest.raises(DocumentValidationError) as invalid:
        parse_sections(case.data, scope=case.scope, trust_domain=case.trust_domain)
    issues = invalid.value.issues
    matching = [i for i in issues if i.pointer == case.pointer and case.reason in i.reason]
    assert matching, (
        f"no issue at {case.pointer!r} with {case.reason!r}; got: {[str(i) for i in issues]}"
    )
    if case.document is not None:
        assert matching[0].document == case.document
