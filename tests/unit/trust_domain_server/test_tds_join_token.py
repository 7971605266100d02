"""Where spirl-tds takes its join token from: a file, $SPIRL_JOIN_TOKEN, or (tests) the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.trust_domain_server.cli import _join_token, _parser

BASE = ["run", "--endpoint", "https://cp", "--trust-domain-deployment", "tdd-1", "--data-dir", "d"]


def parse(*extra: str):  # type: ignore[no-untyped-def]
    return _parser().parse_args([*BASE, *extra])


def test_the_token_comes_from_a_file_the_environment_or_the_flag(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("SPIRL_JOIN_TOKEN", raising=False)
    assert _join_token(parse()) is None
    token_file = tmp_path / "token"
    token_file.write_text("jt-from-file\n")
    assert _join_token(parse("--join-token-file", str(token_file))) == "jt-from-file"
    monkeypatch.setenv("SPIRL_JOIN_TOKEN", " jt-from-env\n")
    assert _join_token(parse()) == "jt-from-env"
    assert _join_token(parse("--join-token-file", str(token_file))) == "jt-from-file"


def test_the_flag_works_and_warns_that_ps_shows_it(caplog) -> None:
    assert _join_token(parse("--join-token", "jt-from-flag")) == "jt-from-flag"
    assert any("visible" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_a_missing_or_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read --join-token-file"):
        _join_token(parse("--join-token-file", str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        _join_token(parse("--join-token-file", str(empty)))


def test_the_flag_and_the_file_exclude_each_other(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        parse("--join-token", "x", "--join-token-file", str(tmp_path / "t"))
    assert refused.value.code == 2 and "--join-token-file" in capsys.readouterr().err
    # The same for the local API's two listeners (--listen silently won before).
    with pytest.raises(SystemExit) as refused:
        parse("--socket", str(tmp_path / "api.sock"), "--listen", "127.0.0.1:0")
    assert refused.value.code == 2 and "--socket" in capsys.readouterr().err
