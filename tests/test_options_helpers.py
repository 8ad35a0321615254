"""The option helpers every config uses: checks that name the option, the expected type and what
was got; fingerprints of local inputs that see every edit; URLs with their credentials hidden."""

import math
import os
import re

import pytest

from prm_builder.common import options
from prm_builder.common.options import _stat_fingerprint, check_bool, check_number, check_string
from prm_builder.common.redact import redact_url


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "temperature must be a finite number, got None"),
        (math.inf, "temperature must be a finite number, got inf"),
        (math.nan, "temperature must be a finite number, got nan"),
        (True, "temperature must be a finite number, got True"),
        ("1.0", "temperature must be a finite number, got '1.0'"),
        (-0.5, "temperature must be a number >= 0 and <= 2, got -0.5"),
        (2.5, "temperature must be a number >= 0 and <= 2, got 2.5"),
    ],
)
def test_check_number_rejects_what_is_no_finite_number_in_range(value, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_number("temperature", value, minimum=0, maximum=2)


def test_check_number_string_and_bool_accept_and_normalize(tmp_path):
    assert check_number("temperature", 1, minimum=0) == 1.0 and isinstance(check_number("t", 1), float)
    assert check_number("timeout", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^timeout must be a number > 0, got 0$"):
        check_number("timeout", 0, minimum=0, above_minimum=True)
    assert check_string("problems", tmp_path) == str(tmp_path)
    with pytest.raises(ValueError, match=r"^problems must be a local path, got None$"):
        check_string("problems", None, "a local path")
    with pytest.raises(ValueError, match=r"^revision must be a non-empty string or None, got 3$"):
        check_string("revision", 3, allow_none=True)
    with pytest.raises(ValueError, match=r"^include_correct must be True or False, got 'yes'$"):
        check_bool("include_correct", "yes")


def test_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n')
    before = _stat_fingerprint(str(path))
    stat = os.stat(path)
    path.write_text('{"question": "q", "answer": "2"}\n')  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert _stat_fingerprint(str(path)) != before
    # The same content elsewhere (a copy, a checkout) is the same input, whatever its stat.
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(path.read_bytes())
    assert _stat_fingerprint(str(folder))[1] == (("train.jsonl", _stat_fingerprint(str(path))[1][0][1]),)
    assert _stat_fingerprint(str(tmp_path / "missing")) == (str(tmp_path / "missing"), None)


def test_large_inputs_are_fingerprinted_by_size_mtime_and_inode(tmp_path, monkeypatch):
    monkeypatch.setattr(options, "CONTENT_FINGERPRINT_MAX_BYTES", 10)
    path = tmp_path / "big.jsonl"
    path.write_text("x" * 20)
    stat = os.stat(path)
    assert _stat_fingerprint(str(path)) == (str(path), (("", (20, stat.st_mtime_ns, stat.st_ino)),))


def test_redact_url_hides_credentials():
    assert redact_url("http://user:pAsSw0rd@127.0.0.1:8000/v1") == "http://***@127.0.0.1:8000/v1"
    assert redact_url("https://host/v1?api_key=sk-123&x=1") == "https://host/v1?api_key=***&x=***"
    assert redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
