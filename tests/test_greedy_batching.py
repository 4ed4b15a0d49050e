"""Length-grouped prefill in greedy decoding: the groups bound padding, and the stacked caches
decode exactly the tokens of one padded batch and of per-item ``model.generate`` (tiny model)."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_model import make_tiny_model

from repcollapse.train.greedy import greedy_batch, prefill_groups


def test_prefill_groups_cover_every_prompt_once_and_bound_padding() -> None:
    rng = random.Random(3)
    for _ in range(200):
        lengths = [rng.randint(1, 400) for _ in range(rng.randint(1, 40))]
        slack = rng.choice([1.0, 1.1, 1.25, 2.0])
        groups = prefill_groups(lengths, slack)
        flat = [i for g in groups for i in g]
        assert sorted(flat) == list(range(len(lengths)))
        assert [lengths[i] for i in flat] == sorted(lengths)  # ascending, groups contiguous
        for g in groups:
            real = sum(lengths[i] for i in g)
            assert max(lengths[i] for i in g) * len(g) <= slack * real + 1e-9
        # maximal: the first prompt of the next group would have broken the bound
        for g, h in zip(groups, groups[1:], strict=False):
            real = sum(lengths[i] for i in g) + lengths[h[0]]
            assert lengths[h[0]] * (len(g) + 1) > slack * real


def test_prefill_groups_by_hand() -> None:
    # 10,10,11 share a group (33 <= 1.25*31); 40 alone would make 4x40 = 160 > 1.25*71
    assert prefill_groups([40, 10, 11, 10], 1.25) == [[1, 3, 2], [0]]
    assert prefill_groups([], 1.25) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    from repcollapse.train.base import materialize_base
    from repcollapse.train.hf import load_model, load_tokenizer

    root = tmp_path_factory.mktemp("greedy")
    base = materialize_base(root / "base", make_tiny_model(root / "tiny"))
    model = load_model(base, "cpu", train=False)
    # A freshly initialised tiny model barely attends (its next token follows the current one):
    # larger weights make every token depend on the context, so a misplaced key/value or
    # position would change the greedy tokens.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.copy_(torch.randn(w.shape, generator=gen) * 0.4)
    return load_tokenizer(base), model


def _reference(model: object, tok: object, p: list[int], cap: int) -> list[int]:
    with torch.no_grad():
        ref = model.generate(  # type: ignore[attr-defined]
            input_ids=torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=cap,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
            eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
        )[0, len(p) :].tolist()
    ids = []
    for t in ref:
        if t == tok.eos_token_id:  # type: ignore[attr-defined]
            break
        ids.append(t)
    return ids


def test_grouped_prefill_decodes_the_tokens_of_one_padded_batch_and_of_generate(
    tiny: tuple[object, object],
) -> None:
    from repcollapse.train.pools import prompt_ids

    tok, model = tiny
    rng = random.Random(0)
    words = [
        "add",
        "the",
        "code",
        "plan",
        "answer",
        "number",
        "say",
        "no",
        "write",
        "short",
        "list",
        "of",
        "two",
        "three",
    ]
    prompts = [
        " ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 3, 20, 60, 150])))
        for _ in range(14)
    ]
    ids = [prompt_ids(tok, p) for p in prompts]
    caps = [rng.choice([0, 1, 4, 12, 20]) for _ in ids]
    caps[0] = 20
    assert len(prefill_groups([len(x) for x in ids], 1.25)) >= 3, "the test needs several groups"
    kw = {"pad_id": tok.pad_token_id, "eos_id": tok.eos_token_id, "device": "cpu"}
    grouped, g_steps = greedy_batch(model, ids, caps, **kw)
    padded, p_steps = greedy_batch(model, ids, caps, slack=None, **kw)
    assert grouped == padded and g_steps == p_steps
    for p, c, g in zip(ids, caps, grouped, strict=True):
        assert g == (_reference(model, tok, p, c) if c else [])
    # stop rules act per row as before: stop after 3 tokens
    stops = [lambda s: len(s.split()) >= 3] * len(ids)
    dec = {"decode": lambda t: " ".join(str(x) for x in t), "stops": stops}
    cut = greedy_batch(model, ids, caps, **kw, **dec)[0]
    assert cut == greedy_batch(model, ids, caps, slack=None, **kw, **dec)[0]
    assert all(
        c == g[: len(c)] and len(c) == min(3, len(g)) for c, g in zip(cut, grouped, strict=True)
    )


def test_bad_slack_is_refused(tiny: tuple[object, object]) -> None:
    tok, model = tiny
    with pytest.raises(ValueError, match="slack"):
        greedy_batch(model, [[1, 2]], [2], pad_id=0, eos_id=None, device="cpu", slack=0.5)


def test_teacher_forced_stats_batched_by_length_keep_the_items_order(
    tiny: tuple[object, object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tiny_model import write_tiny_data

    from repcollapse.train.pools import DataDir
    from repcollapse.train.teacher import token_stats

    tok, model = tiny
    data = DataDir(write_tiny_data(tmp_path_factory.mktemp("tf"), n_train=4, n_eval=6), tok, 64)
    encs = [e for d in ("general", "code", "math") for e in data.encoded(d, "eval") if e]
    lengths = [len(e["input_ids"]) for e in encs]
    assert lengths != sorted(lengths), "the test needs items out of length order"
    answers = [[len(e["input_ids"]) - 1] if k % 2 else [] for k, e in enumerate(encs)]
    got = token_stats(model, tok, encs, device="cpu", batch_size=3, answers=answers)
    one = [
        token_stats(model, tok, [e], device="cpu", batch_size=1, answers=[a])
        for e, a in zip(encs, answers, strict=True)
    ]
    assert got["n_tokens"] == [o["n_tokens"][0] for o in one]
    assert got["nll_sum"] == pytest.approx([o["nll_sum"][0] for o in one], rel=1e-5)
    want_ans = [o["answer_logprob"][0] for o in one]
    assert [a is None for a in got["answer_logprob"]] == [a is None for a in want_ans]
    assert any(a is not None for a in want_ans)
    assert [a for a in got["answer_logprob"] if a is not None] == pytest.approx(
        [a for a in want_ans if a is not None], rel=1e-5
    )
    want_item = torch.cat([torch.full((o["n_tokens"][0],), k) for k, o in enumerate(one)])
    assert torch.equal(got["item"], want_item)
    for key in ("nll", "conf", "correct"):
        want = torch.cat([o[key] for o in one])
        assert torch.allclose(got[key], want, rtol=1e-5, atol=1e-6), key
