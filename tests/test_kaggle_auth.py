"""Kaggle credentials: the current token forms beside the legacy key, one line per missing case,
and no credential in any output."""

from __future__ import annotations

import json

import pytest

from fgvc.cli import main
from fgvc.inference.kaggle_auth import CredentialsError, find_credentials, scrub

TOKEN = "KGAT_0123456789abcdef0123456789abcdef"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "KAGGLE_KEY", "KAGGLE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".kaggle").mkdir()
    return tmp_path / ".kaggle"


def test_token_in_the_environment(home, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    assert find_credentials().source == "KAGGLE_API_TOKEN"
    assert scrub(f"bad token {TOKEN}!") == "bad token ***!"


def test_token_file_named_by_the_environment(home, monkeypatch):
    path = home / "tok"
    path.write_text(TOKEN + "\n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(path))
    assert "KAGGLE_API_TOKEN" in find_credentials().source
    assert TOKEN not in scrub(f"x {TOKEN}")


def test_access_token_file(home):
    (home / "access_token").write_text(TOKEN)
    assert find_credentials().source.endswith(".kaggle/access_token")
    assert scrub(TOKEN) == "***"


def test_legacy_forms(home, monkeypatch):
    (home / "kaggle.json").write_text(json.dumps({"username": "me", "key": "legacykey123"}))
    assert find_credentials().source.endswith("kaggle.json")
    assert scrub("key legacykey123") == "key ***"
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "envkey456")
    assert find_credentials().source == "KAGGLE_USERNAME/KAGGLE_KEY"
    assert "envkey456" not in scrub("envkey456 and legacykey123")


@pytest.mark.parametrize("setup,message", [
    (lambda home, mp: None, "no Kaggle credentials found"),
    (lambda home, mp: mp.setenv("KAGGLE_API_TOKEN", ""), "KAGGLE_API_TOKEN is set but empty"),
    (lambda home, mp: (home / "access_token").write_text("\n"), "access_token is empty"),
    (lambda home, mp: mp.setenv("KAGGLE_USERNAME", "me"), "KAGGLE_USERNAME is set but KAGGLE_KEY is not"),
    (lambda home, mp: mp.setenv("KAGGLE_KEY", "k3y"), "KAGGLE_KEY is set but KAGGLE_USERNAME is not"),
    (lambda home, mp: (home / "kaggle.json").write_text("{"), "kaggle.json is not valid JSON"),
    (lambda home, mp: (home / "kaggle.json").write_text('{"username": "me"}'), "kaggle.json lacks key"),
])
def test_each_missing_case_is_one_line(home, monkeypatch, capsys, tmp_path, setup, message):
    setup(home, monkeypatch)
    with pytest.raises(CredentialsError, match=message):
        find_credentials()
    csv = tmp_path / "s.csv"
    csv.write_text("id,predicted\n1,2\n")
    assert main(["submit", str(csv), "--competition", "c", "-m", "m"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "k3y" not in err


def test_rejected_token_is_one_line_and_scrubbed(home, monkeypatch, tmp_path, capsys):
    """kaggle 2.x: a token Kaggle does not accept leaves the API unauthenticated, after printing
    help to standard output; fgvc swallows the help and says which credentials failed."""
    package = tmp_path / "site" / "kaggle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import os\nprint('help page ' + os.environ['KAGGLE_API_TOKEN'])\n"
        "class _Api:\n    _authenticated = False\napi = _Api()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(__import__("sys").modules, "kaggle", raising=False)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    csv = tmp_path / "s.csv"
    csv.write_text("id,predicted\n1,2\n")
    assert main(["submit", str(csv), "--competition", "c", "-m", "m"]) == 2
    captured = capsys.readouterr()
    assert "Kaggle did not accept the credentials from KAGGLE_API_TOKEN" in captured.err
    assert TOKEN not in captured.out + captured.err and "help page" not in captured.out
