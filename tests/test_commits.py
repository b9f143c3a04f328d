"""Commits a reader can use (README, Contributing): a subject of at most 72 characters, a
blank line, then a body that says why. Checked for every commit since the convention began;
skipped outside a git checkout (an sdist)."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The first commit written to the convention; the history before it is left as it is.
FIRST = "463ee7bc6dc50e369e19fab8e064bf939a4dbf29"
MAX_SUBJECT = 72


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_commit_messages_have_a_short_subject_and_a_body():
    if git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    if git("cat-file", "-e", FIRST + "^{commit}").returncode != 0:
        pytest.skip("a shallow clone: the convention's first commit is not in it")
    log = git("log", "--format=%H%x00%B%x01", f"{FIRST}^..HEAD").stdout
    problems = []
    for entry in filter(str.strip, log.split("\x01")):
        sha, message = entry.strip().split("\x00", 1)
        subject, _, rest = message.partition("\n")
        if len(subject) > MAX_SUBJECT:
            problems.append(f"{sha[:8]}: subject of {len(subject)} characters: {subject[:60]}...")
        if not rest.startswith("\n") or not rest.strip():
            problems.append(f"{sha[:8]}: no body after a blank line: {subject}")
    assert not problems, "\n".join(problems)
