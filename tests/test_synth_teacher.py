"""Teacher and forward modes, probing, caching and key hygiene: through a real local HTTP endpoint
(fast) and the bundled SmolLM2 (slow)."""

from __future__ import annotations

import json
import re

import pytest
from stratos_agent.tools.synth import REJECT_UNPARSABLE, REJECT_WRONG, probe_teacher, synthesize
from stratos_agent.tools.teachers import CachedTeacher, OpenAICompatibleTeacher
from test_synth_solver import independent_winning_tiles
from test_teachers_remote import SECRET, FakeEndpoint

from stratos_agent.tasks import get_task_pack
from stratos_agent.tasks.tiles import CODES, parse_compact, to_counts

PACK = get_task_pack("mahjong")
_KNOWN = re.compile(r"already known:\n(.+)\n")


def reverse_teacher(body: dict) -> str:
    """Writes 'reasoning' toward the given answer; every third request errs, every fifth rambles."""
    prompt = body["messages"][-1]["content"]
    known = _KNOWN.search(prompt).group(1)
    n = len(prompt) + sum(map(ord, prompt))
    if n % 5 == 0:
        return "Let me think about the melds... I am not sure."
    if n % 3 == 0:
        return f"Counting melds.\n{PACK.format_answer(['1z'] if known != PACK.format_answer(['1z']) else [])}"
    return f"Split the hand into melds and a pair; the open shapes complete it.\n{known}"


def solving_teacher(body: dict) -> str:
    """Answers cold, correctly, with the independent `mahjong` package."""
    line = next(ln for ln in body["messages"][-1]["content"].splitlines() if ln.startswith("Hand:"))
    hand = parse_compact("".join(re.findall(r"[1-9]+[mpsz]", line)))
    wins = independent_winning_tiles(to_counts(hand))
    return f"I checked every tile.\n{PACK.format_answer([CODES[t] for t in wins])}"


def _teacher(url: str) -> OpenAICompatibleTeacher:
    return OpenAICompatibleTeacher(url, "test-model", api_key=SECRET, backoff_base_s=0.01, timeout_s=10)


def test_teacher_mode_rejects_with_reasons_and_never_pays_twice(tmp_path):
    cache = tmp_path / "cache"
    with FakeEndpoint(reverse_teacher) as ep:
        teacher = CachedTeacher(_teacher(ep.url), cache)
        ref = synthesize("mahjong", 40, tmp_path / "a", mode="teacher", teacher=teacher, seed=7)
        calls = len(ep.requests)
        again = synthesize("mahjong", 40, tmp_path / "b", mode="teacher",
                           teacher=CachedTeacher(_teacher(ep.url), cache), seed=7)
        assert len(ep.requests) == calls  # a rerun from scratch is served by the cache alone
    card = ref.card
    assert card.n_accepted == 40 and card.teacher == "openai-compatible:test-model@local"
    assert card.rejections[REJECT_WRONG] > 0 and card.rejections[REJECT_UNPARSABLE] > 0
    assert card.attempted == 40 + sum(card.rejections.values())
    assert again.card.fingerprint == card.fingerprint
    dd = ref.load()
    for split in dd:
        for row in dd[split]:
            assert row["completion"].startswith("Split the hand")
            assert row["completion"].endswith(row["answer"]) and "already known" not in row["prompt"]
    # the key reached the server but nothing Stratos wrote: cache, partial log, dataset, card, record
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert all(a == f"Bearer {SECRET}" for a in ep.auth)
    assert SECRET.encode() not in written and SECRET not in ref.model_dump_json()


def test_forward_mode_keeps_only_verified_answers(tmp_path):
    with FakeEndpoint(lambda body: "Winning tiles: none") as ep:  # right for noten hands only
        ref = synthesize("mahjong", 10, tmp_path / "fwd", mode="forward", seed=1,
                         teacher=CachedTeacher(_teacher(ep.url), tmp_path / "cache"))
    rows = [r for split in ref.load().values() for r in split]
    assert len(rows) == 10 and all(r["answer"] == PACK.format_answer([]) for r in rows)  # only noten hands
    assert ref.card.rejections[REJECT_WRONG] > 0


def test_probe_teacher_is_forward_yield_and_cached(tmp_path):
    with FakeEndpoint(solving_teacher) as ep:
        teacher = CachedTeacher(_teacher(ep.url), tmp_path / "cache")
        perfect = probe_teacher("mahjong", teacher, n=24, seed=2)
        calls = len(ep.requests)
        again = probe_teacher(PACK, CachedTeacher(_teacher(ep.url), tmp_path / "cache"), n=24, seed=2)
        assert len(ep.requests) == calls == 24
    assert (perfect.correct, perfect.accuracy, perfect.unparsable) == (24, 1.0, 0)
    assert again.correct == 24 and perfect.teacher == "openai-compatible:test-model@local"
    with FakeEndpoint(lambda body: "No idea, sorry.") as ep:
        clueless = probe_teacher("mahjong", CachedTeacher(_teacher(ep.url), tmp_path / "c2"), n=8)
    assert (clueless.accuracy, clueless.unparsable) == (0.0, 8)
    assert SECRET not in json.dumps(perfect.model_dump(mode="json"))


# ---------------------------------------------------------------------------- bundled model (slow)
@pytest.mark.slow
def test_teacher_mode_with_the_bundled_model_end_to_end(tmp_path, capsys):
    from stratos_agent.tools.teachers import make_teacher

    teacher = make_teacher("smollm2-135m", cache_dir=tmp_path / "cache", batch_size=4)
    ref = synthesize("mahjong", 4, tmp_path / "t", mode="teacher", teacher=teacher, seed=0,
                     max_new_tokens=48, max_attempts=8, chunk_size=4)
    card = ref.card
    assert card.teacher == "transformers:smollm2-135m" and card.attempted == 8
    assert card.n_accepted + sum(card.rejections.values()) == 8
    assert set(card.rejections) <= {REJECT_WRONG, REJECT_UNPARSABLE, "duplicate"}
    with capsys.disabled():
        print(f"\nbundled teacher, teacher mode: {card.n_accepted}/8 kept, rejections {card.rejections}")
    misses = teacher.misses
    synthesize("mahjong", 4, tmp_path / "t2", mode="teacher", teacher=teacher, seed=0,
               max_new_tokens=48, max_attempts=8, chunk_size=4)
    assert teacher.misses == misses  # all 8 answers came from the cache


@pytest.mark.slow
def test_local_teacher_left_padding_matches_unbatched():
    from stratos_agent.tools.teachers import TransformersTeacher

    teacher = TransformersTeacher("smollm2-135m", batch_size=4)
    prompts = ["Say hello.", "List three prime numbers and explain in one sentence why each is prime."]
    batched = teacher.generate(prompts, max_new_tokens=12)
    single = [teacher.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single and all(batched)


def test_plan_strategy_and_probe_choose_the_synthesis_mode() -> None:
    from stratos_agent.tools.synth import choose_mode

    assert choose_mode("injection", "endpoint:big", 0.9) == "solver"  # the solver is exact: no teacher needed
    assert choose_mode("alignment-seq", "endpoint:big", 0.8) == "teacher"  # a competent endpoint writes rationales
    assert choose_mode("alignment-seq", "endpoint:big", 0.2) == "forward"  # one that failed its probe does not
    assert choose_mode("alignment-seq", "endpoint:big", None) == "forward"
    assert choose_mode("alignment-logit", "smollm2-135m", 0.9) == "forward"  # in-process teachers answer forward
