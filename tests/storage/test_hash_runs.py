"""Id hashes are saved in checkpoints and read by other processes: the numpy path and the
one-string path must give every string the same key, in every process."""
from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.jsonl.hash_runs import NUMPY_FROM, HashRuns, hash_key, hash_keys
from tests.support import ROOT

ids = st.one_of(st.text(max_size=80), st.text("0123456789abcdef", min_size=32, max_size=32),
                st.from_regex(r"task-[0-9]{1,9}", fullmatch=True))


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(ids, min_size=NUMPY_FROM, max_size=3 * NUMPY_FROM))
def test_numpy_and_single_string_keys_agree(texts: list[str]) -> None:
    assert hash_keys(texts).tolist() == [hash_key(text) for text in texts]
    assert hash_keys(texts[:3]).tolist() == [hash_key(text) for text in texts[:3]]


def test_keys_are_the_same_in_another_process() -> None:
    texts = ["task-1", "é", "0f3c2a1b9d8e7f60a1b2c3d4e5f60718", "x" * 100, ""] * NUMPY_FROM
    program = ("import sys; from app.storage.jsonl.hash_runs import hash_keys; "
               "print(hash_keys(sys.argv[1:]).tolist())")
    other = subprocess.run([sys.executable, "-c", program, *texts], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
    assert other.strip() == str(hash_keys(texts).tolist())


def test_runs_find_every_value_added_in_trickles_and_batches() -> None:
    runs = HashRuns()
    for start in range(0, 20_000, 700):  # batches, and a trickle of single entries
        keys = hash_keys([f"id-{n}" for n in range(start, start + 700)])
        runs.add(keys, keys * 0 + start)
        runs.add(keys[:1], keys[:1] * 0 - 1)
    assert runs.values_of(hash_key("id-705")) == [700]
    assert sorted(runs.values_of(hash_key("id-1400"))) == [-1, 1400]
    keys, values = runs.saved()
    restored = HashRuns.restored(keys, values)
    probe = hash_keys([f"id-{n}" for n in range(0, 20_300, 7)])
    assert restored.counts(probe).tolist() == runs.counts(probe).tolist()
    assert restored.only_values(probe).tolist() == runs.only_values(probe).tolist()
