"""The black-box suite's answers against docs/openapi.yaml.

`make test` runs tests/blackbox with CORRAL_RECORD_DIR set, so every answer
a test got through requests, urllib or http.client was recorded there
(openapi_check.install_recorder), and then this file: every recorded
answer must be one the document describes (its path, method, status,
content type, required headers and body), and every operation of the
document must have been reached by some test. Run alone, without a
recording, it is skipped; tests/blackbox/test_openapi.py checks a daemon
driven through every operation on its own.
"""
import os
import pathlib

import pytest

import openapi_check

RECORD_DIR = os.environ.get("CORRAL_RECORD_DIR")
pytestmark = pytest.mark.skipif(not RECORD_DIR, reason="no recording: run tests/blackbox with CORRAL_RECORD_DIR")


@pytest.fixture(scope="module")
def records():
    recs = openapi_check.read_records(pathlib.Path(RECORD_DIR))
    assert recs, f"nothing was recorded in {RECORD_DIR}: did tests/blackbox run with CORRAL_RECORD_DIR set?"
    return recs


def test_every_answer_is_documented(records):
    found = openapi_check.problems(openapi_check.load_doc(), records)
    assert not found, "answers docs/openapi.yaml does not describe:\n" + "\n".join(found)


def test_every_documented_operation_was_exercised(records):
    missing = openapi_check.unexercised(openapi_check.load_doc(), records)
    assert not missing, "operations of docs/openapi.yaml no test reached:\n" + "\n".join(missing)
