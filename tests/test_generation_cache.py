"""The generation cache on its own: what is written is read back, torn and duplicate lines are
handled, epochs hide discarded generations, and listing/clearing see every cache."""

import json

import pytest

from prm_builder import generation_cache
from prm_builder.backends import Generation
from prm_builder.generation_cache import CorruptCacheError, GenerationCache
from prm_builder.problems import problem_key

IDENTITY = {"model": "org/My Model", "temperature": 1.0, "seed": 0}
P1, P2 = problem_key("problem one"), problem_key("problem two")


def _gens(*texts):
    return [Generation(text, "stop") for text in texts]


def _segments(cache):
    return sorted((cache.path / "segments").glob("*.jsonl"))


def test_written_generations_are_read_back_by_problem(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    assert cache.path.name.startswith("My-Model-")
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("a", "b"))
        writer.append(P1, f"rollout:{P1}:x", 0, [Generation("c", "length")])
        writer.append(P2, f"sample:{P2}", 0, _gens("d"))
        writer.append(P1, f"sample:{P1}", 2, _gens("e"))
    assert cache.load() == {
        P1: {
            f"sample:{P1}": {0: Generation("a", "stop"), 1: Generation("b", "stop"), 2: Generation("e", "stop")},
            f"rollout:{P1}:x": {0: Generation("c", "length")},
        },
        P2: {f"sample:{P2}": {0: Generation("d", "stop")}},
    }
    assert cache.load([P2]) == {P2: {f"sample:{P2}": {0: Generation("d", "stop")}}}
    assert json.loads((cache.path / "identity.json").read_text()) == IDENTITY


def test_writer_creates_a_segment_only_when_it_writes(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer():
        pass
    assert not cache.path.exists()
    for _ in range(2):
        with cache.writer() as writer:
            writer.append(P1, f"sample:{P1}", 0, _gens("a"))
    assert len(_segments(cache)) == 2  # one per writer: nobody appends to another's segment


def test_torn_last_line_is_ignored_and_a_corrupt_middle_line_is_an_error(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("kept"))
        writer.append(P1, f"sample:{P1}", 1, _gens("torn"))
    (segment,) = _segments(cache)
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 7])  # a kill in the middle of the second write
    assert cache.load() == {P1: {f"sample:{P1}": {0: Generation("kept", "stop")}}}

    segment.write_bytes(data.replace(b'"kept"', b'"kept'))  # damage the first of two lines
    with pytest.raises(CorruptCacheError, match=rf"{segment.name}, line 1: expected a JSON generation record"):
        cache.load()


def test_first_written_generation_wins_over_a_duplicate(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer() as first:
        first.append(P1, f"sample:{P1}", 0, _gens("first", "first-1"))
    with cache.writer() as racer:  # e.g. a second build racing on the same cache
        racer.append(P1, f"sample:{P1}", 1, _gens("second-1", "second-2"))
    assert cache.load()[P1][f"sample:{P1}"] == {
        0: Generation("first", "stop"),
        1: Generation("first-1", "stop"),
        2: Generation("second-2", "stop"),
    }
    summary = generation_cache.summarize(cache.path)
    assert summary.generations == {"sample": 3} and summary.problems == 1


def test_new_epoch_hides_and_deletes_old_generations(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("old"))
    assert cache.epoch == 0
    assert cache.start_new_epoch() == 1
    assert cache.epoch == 1 and cache.load() == {} and _segments(cache) == []
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("new"))
    assert cache.load() == {P1: {f"sample:{P1}": {0: Generation("new", "stop")}}}
    assert _segments(cache)[0].name.startswith("e000001-")


def test_list_resolve_and_remove(tmp_path):
    caches = [GenerationCache(tmp_path, {**IDENTITY, "seed": seed}) for seed in (0, 1)]
    for cache in caches:
        with cache.writer() as writer:
            writer.append(P1, f"sample:{P1}", 0, _gens("a", "b"))
            writer.append(P1, f"rollout:{P1}:x", 0, _gens("c"))
    summaries = generation_cache.list_caches(tmp_path)
    assert [s.name for s in summaries] == sorted(c.path.name for c in caches)
    assert summaries[0].generations == {"sample": 2, "rollout": 1}
    assert summaries[0].bytes > 0
    text = generation_cache.describe(summaries[0])
    assert "model: org/My Model" in text and "done: 1 problems, 2 samples, 1 rollouts" in text

    name = caches[1].path.name
    assert generation_cache.resolve(tmp_path, name[: len("My-Model-") + 6]) == caches[1].path
    with pytest.raises(ValueError, match="2 match"):
        generation_cache.resolve(tmp_path, "My-Model")
    with pytest.raises(ValueError, match="none matches"):
        generation_cache.resolve(tmp_path, "nope")
    generation_cache.remove(caches[1].path)
    assert [s.name for s in generation_cache.list_caches(tmp_path)] == [caches[0].path.name]
    assert generation_cache.list_caches(tmp_path / "missing") == []


def test_problem_keys_must_have_the_fixed_length(tmp_path):
    with GenerationCache(tmp_path, IDENTITY).writer() as writer, pytest.raises(ValueError, match="16 characters"):
        writer.append("short", "sample:short", 0, _gens("a"))
