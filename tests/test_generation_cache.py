"""The generation cache on its own: what is written is read back, torn and duplicate lines are
handled, epochs hide discarded generations, and listing/clearing see every cache."""

import json

import pytest

from prm_builder.sampling import generation_cache
from prm_builder.sampling.backends import Generation
from prm_builder.sampling.generation_cache import CorruptCacheError, GenerationCache
from prm_builder.readers.problems import problem_key

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
    summary = generation_cache.summarize_cache(cache.path)
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
    text = generation_cache.describe_cache(summaries[0])
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


def _damage_middle_line(cache):
    """Three records; the middle one made invalid JSON, as a disk or an editor might."""
    with cache.writer() as writer:
        for index, text in enumerate(("a", "b", "c")):
            writer.append(P1, f"sample:{P1}", index, _gens(text))
    (segment,) = _segments(cache)
    lines = segment.read_bytes().split(b"\n")
    lines[1] = lines[1][:25]
    segment.write_bytes(b"\n".join(lines))
    return segment


def test_damaged_cache_is_listed_cleared_and_repaired(tmp_path, capsys):
    from prm_builder import cli

    sound = GenerationCache(tmp_path, {**IDENTITY, "seed": 1})
    with sound.writer() as writer:
        writer.append(P2, f"sample:{P2}", 0, _gens("d"))
    damaged = GenerationCache(tmp_path, IDENTITY)
    segment = _damage_middle_line(damaged)
    with pytest.raises(CorruptCacheError, match=rf"{segment.name}, line 2: .*prm-builder cache repair {damaged.path.name}"):
        damaged.load()

    assert cli.main(["cache", "list", "--generation-cache-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert f"2 generation cache(s) in {tmp_path}" in listing and sound.path.name in listing
    assert f"DAMAGED: 1 damaged record(s), the first at {segment}, line 2: expected a JSON generation record" in listing
    assert f"fix: prm-builder cache repair {damaged.path.name}" in listing

    assert cli.main(["cache", "repair", damaged.path.name[:14], "--generation-cache-dir", str(tmp_path)]) == 0
    assert f"repaired {damaged.path}: dropped 1 damaged record(s), kept 2" in capsys.readouterr().out
    assert damaged.load() == {P1: {f"sample:{P1}": {0: Generation("a", "stop"), 2: Generation("c", "stop")}}}
    assert generation_cache.summarize_cache(damaged.path).damage is None

    _damage_middle_line(GenerationCache(tmp_path, {**IDENTITY, "seed": 2}))
    name = GenerationCache(tmp_path, {**IDENTITY, "seed": 2}).path.name
    assert cli.main(["cache", "clear", name, "--generation-cache-dir", str(tmp_path)]) == 0
    assert sorted(s.name for s in generation_cache.list_caches(tmp_path)) == sorted([sound.path.name, damaged.path.name])


def test_invalid_records_are_damage_and_unreadable_epochs_are_rebuilt(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("a"))
        # What the old openai backend cached from a null answer: valid JSON, no usable text.
        writer.file.write(json.dumps({"p": P1, "k": f"sample:{P1}", "i": 1, "g": [[None, "stop"]]}).encode() + b"\n")
        writer.append(P1, f"sample:{P1}", 2, _gens("c"))
    with pytest.raises(CorruptCacheError, match=r"line 2: expected generations as \[text, one of \['stop', 'length'\]\]"):
        cache.load()
    (cache.path / "epoch").write_text("not a number")
    assert "epoch: expected an integer" in generation_cache.summarize_cache(cache.path).damage
    assert generation_cache.repair(cache.path) == (1, 2)
    assert cache.epoch == 0 and sorted(cache.load()[P1][f"sample:{P1}"]) == [0, 2]


def test_repair_leaves_a_segment_that_is_still_being_written(tmp_path):
    cache = GenerationCache(tmp_path, IDENTITY)
    with cache.writer() as writer:
        writer.append(P1, f"sample:{P1}", 0, _gens("a"))
        writer.file.write(b'{"p": broken}\n')
        writer.append(P1, f"sample:{P1}", 1, _gens("b"))
        with pytest.raises(CorruptCacheError, match="is being written by a running build"):
            generation_cache.repair(cache.path)
    assert generation_cache.repair(cache.path) == (1, 2)
