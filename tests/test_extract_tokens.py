"""Tokenization of the probe: span labels, rendering, splits, the token sampler, store order."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_extract_fixtures import make_tokenizer, probe_records

from repcollapse.extract.tokens import (
    assign_splits,
    build_plan,
    render,
    sample_positions,
    tokenize_record,
)
from repcollapse.store_schema.records import DOMAINS, ProbeRecord, Span, parse_probe_record


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def plain_tok(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return make_tokenizer(tmp_path_factory.mktemp("plain"), chat_template=False)


REFERENCE = "Think: 2 + 2 = 4. Sorry, I refuse."
RECORD = ProbeRecord(
    id="hand-0",
    domain="safety",
    prompt="What is 2 + 2?",
    reference=REFERENCE,
    spans=(
        Span("early_response", 0, 17),
        Span("late_response", 17, 34),
        Span("cot", 0, 17),
        Span("refusal", 27, 34),
    ),
)


def _pieces(tok, text: str, labels: np.ndarray, add_special: bool) -> dict[str, str]:  # noqa: ANN001
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=add_special)
    out: dict[str, str] = {}
    for (s, e), label in zip(enc["offset_mapping"], labels, strict=True):
        out[label] = out.get(label, "") + text[s:e]
    return out


def test_span_labels_hand_made_record_chat(tok) -> None:  # noqa: ANN001
    ids, labels = tokenize_record(tok, RECORD, max_length=512)
    text, ref_start, lead = render(tok, RECORD.prompt, RECORD.reference)
    assert lead == 0 and text[ref_start : ref_start + len(REFERENCE)] == REFERENCE
    assert len(ids) == len(labels)
    pieces = _pieces(tok, text, labels, add_special=False)
    # cot outranks early_response; the token " re" (its space ends late_response, "re" starts
    # refusal) is refusal: a visible overlap decides.
    assert pieces["cot"] == "Think: 2 + 2 = 4."
    assert pieces["late_response"] == " Sorry, I"
    assert pieces["refusal"] == " refuse."
    assert pieces["prompt"] == text[:ref_start]
    assert pieces["prompt"].endswith("<|im_start|>assistant\n")
    assert pieces["response"] == "<|im_end|>\n"  # end-of-turn tokens after the reference
    assert set(pieces) == {"prompt", "cot", "late_response", "refusal", "response"}
    assert list(labels[:3]) == ["prompt"] * 3


def test_span_labels_without_chat_template(plain_tok) -> None:  # noqa: ANN001
    ids, labels = tokenize_record(plain_tok, RECORD, max_length=512)
    text, ref_start, _ = render(plain_tok, RECORD.prompt, RECORD.reference)
    assert text == RECORD.prompt + "\n" + REFERENCE and ref_start == len(RECORD.prompt) + 1
    pieces = _pieces(plain_tok, text, labels, add_special=True)
    assert pieces["prompt"] == RECORD.prompt + "\n"
    assert pieces["cot"] == "Think: 2 + 2 = 4."
    assert pieces["refusal"] == " refuse."
    assert "response" not in pieces


def test_unannotated_reference_is_response_and_truncation(tok) -> None:  # noqa: ANN001
    rec = ProbeRecord(id="x", domain="general", prompt="Hi", reference="Hello there, friend.")
    ids, labels = tokenize_record(tok, rec, max_length=512)
    assert set(labels) == {"prompt", "response"}
    short_ids, short_labels = tokenize_record(tok, rec, max_length=7)
    assert len(short_ids) == len(short_labels) == 7
    assert np.array_equal(short_ids, ids[:7])


def test_template_that_strips_the_reference(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    rec = ProbeRecord(
        id="s",
        domain="math",
        prompt="Q",
        reference="  Answer is 42",
        spans=(Span("late_response", 2, 8),),
    )
    text, ref_start, lead = render(tok, rec.prompt, rec.reference)
    assert lead == 2 and text[ref_start:].startswith("Answer is 42")
    _, labels = tokenize_record(tok, rec, 512)
    pieces = _pieces(tok, text, labels, add_special=False)
    assert pieces["late_response"] == "Answer"


def test_splits_stratified_seeded() -> None:
    records = [
        ProbeRecord(id=f"{d}-{i}", domain=d, prompt="p", reference="r")
        for d in DOMAINS
        for i in range(8)
    ]
    split = assign_splits(records, seed=0)
    assert split == assign_splits(list(reversed(records)), seed=0)  # order-free
    for d in DOMAINS:
        held = sum(split[f"{d}-{i}"] == "heldout" for i in range(8))
        assert held == 2  # 25% of 8, in every domain
    assert split != assign_splits(records, seed=1)
    one = assign_splits(records[:2], seed=0)  # a domain with two examples: one held out
    assert sorted(one.values()) == ["fit", "heldout"]


def test_token_cap_per_span(tok, tmp_path: Path) -> None:  # noqa: ANN001
    records = [parse_probe_record(r) for r in probe_records()]
    full = build_plan(tok, records, max_length=512, token_cap_per_span=None, seed=0)
    capped = build_plan(tok, records, max_length=512, token_cap_per_span=5, seed=0)
    again = build_plan(tok, records, max_length=512, token_cap_per_span=5, seed=0)
    other = build_plan(tok, records, max_length=512, token_cap_per_span=5, seed=1)
    cells_full = Counter(zip(full.coords["domain"], full.coords["span"], strict=True))
    cells = Counter(zip(capped.coords["domain"], capped.coords["span"], strict=True))
    assert set(cells) == set(cells_full)
    for cell, n in cells.items():
        assert n == min(5, cells_full[cell])
    for key in capped.coords:
        assert np.array_equal(capped.coords[key], again.coords[key])
    assert not np.array_equal(capped.coords["position"], other.coords["position"])
    # store order: domains contiguous in DOMAINS order, positions ascending within an example
    order = [DOMAINS.index(d) for d in capped.coords["domain"]]
    assert order == sorted(order)
    for ex in capped.examples:
        assert np.all(np.diff(ex.keep) > 0)


def test_sampler_keeps_everything_without_cap() -> None:
    spans = [np.array(["prompt", "cot", "cot"]), np.array(["prompt"])]
    keep = sample_positions(["math", "code"], spans, None, 0)
    assert [k.tolist() for k in keep] == [[0, 1, 2], [0]]
    with pytest.raises(ValueError, match="expected a positive integer"):
        sample_positions(["math"], spans[:1], 0, 0)


def test_plan_coords(tok) -> None:  # noqa: ANN001
    records = [parse_probe_record(r) for r in probe_records()]
    plan = build_plan(tok, records, max_length=512, token_cap_per_span=None, seed=0)
    c = plan.coords
    assert plan.n_tokens == sum(len(ex.input_ids) for ex in plan.examples)
    assert np.array_equal(c["is_sink"], c["position"] == 0)
    ends = np.flatnonzero(np.append(c["example"][1:] != c["example"][:-1], True))
    assert np.all(c["target_id"][ends] == -1)
    inner = np.setdiff1d(np.arange(plan.n_tokens), ends)
    assert np.array_equal(c["target_id"][inner], c["token_id"][inner + 1])
    # file order within a domain: general-00 before general-01
    ex_order = list(dict.fromkeys(c["example"]))
    assert ex_order[:2] == ["general-00", "general-01"]
    assert set(c["split"]) == {"fit", "heldout"}
    for ex_id in ex_order:
        assert len(set(c["split"][c["example"] == ex_id])) == 1
