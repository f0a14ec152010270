"""Off-policy estimators worked out on paper for two lists, and unbiased against a known truth
when the candidate's lists are ones the logging policy explored."""

from __future__ import annotations

import numpy as np
import pytest

from apps.ope.estimators import Logged, evaluate
from engine.config import ExplorationConfig
from engine.retrieval.explore import explore

#: List 0: a (p 0.8, clicked) then b (p 0.8); the candidate shows a then c: one match.
#: List 1: d (p 0.9) then e (p 0.1, swapped there); the candidate shows f then e: one match.
PAPER = Logged(
    list=np.array([0, 0, 1, 1]),
    reward=np.array([1.0, 0.0, 0.0, 0.0]),
    propensity=np.array([0.8, 0.8, 0.9, 0.1]),
    match=np.array([True, False, False, True]),
    slots=np.array([2, 2]),
    model=np.array([0.5, 0.2, 0.3, 0.1]),
    model_candidate=np.array([0.9, 0.4]),
)


def test_every_estimate_on_paper():
    got = {name: e.value for name, e in evaluate(PAPER, resamples=0).items()}
    w = 1 / 0.8 + 1 / 0.1  # the weights of the two matches: 1.25 and 10
    assert got["naive"] == pytest.approx(1 / 2)  # one of two matches clicked
    assert got["ips"] == pytest.approx(1.25 / 4)  # four candidate impressions
    assert got["snips"] == pytest.approx(1.25 / w)
    assert got["support"] == pytest.approx(w / 4)
    assert got["dm"] == pytest.approx((0.9 + 0.4) / 4)
    # DR: the model's value plus 1.25 x (1 - 0.5) + 10 x (0 - 0.1)
    assert got["dr"] == pytest.approx((0.9 + 0.4 + 0.625 - 1.0) / 4)
    without_model = evaluate(
        Logged(PAPER.list, PAPER.reward, PAPER.propensity, PAPER.match, PAPER.slots),
        resamples=0,
    )
    assert set(without_model) == {"naive", "ips", "snips", "support"}


def test_the_logging_policy_judged_by_its_own_deterministic_log_is_its_logged_rate():
    rng = np.random.default_rng(0)
    reward = (rng.random(600) < 0.2).astype(float)
    logged = Logged(
        np.repeat(np.arange(200), 3), reward, np.ones(600), np.ones(600, bool), np.full(200, 3)
    )
    got = evaluate(logged, resamples=200)
    for name in ("naive", "ips", "snips"):
        assert got[name].value == pytest.approx(reward.mean())
        assert got[name].low < reward.mean() < got[name].high
    assert got["support"].value == 1.0


def test_a_zero_propensity_is_refused():
    bad = Logged(np.array([0]), np.array([1.0]), np.array([0.0]), np.array([True]), np.array([1]))
    with pytest.raises(ValueError, match="propensity is 0"):
        evaluate(bad, resamples=0)


def test_ips_and_snips_recover_a_candidates_true_rate_from_explored_logs_and_naive_does_not():
    """Lists of 4 under a position-based click model; the logging policy explores with swaps;
    the candidate always shows pair 0 swapped (so every item-position it shows is loggable)."""
    rng = np.random.default_rng(11)
    theta = 1 / np.log2(np.arange(4) + 2)
    setting = ExplorationConfig(swap_share=0.3, swap_depth=4)
    chosen = np.arange(4)
    candidate = np.array([1, 0, 2, 3])
    n = 20_000
    appeal = rng.beta(2, 4, size=(n, 4)) * np.array([1.0, 0.8, 0.6, 0.4])  # by engine rank
    true_rate = float((theta * appeal[:, candidate]).mean())
    lists, rewards, propensities, matches = [], [], [], []
    for i in range(n):
        shown = explore(chosen, chosen[:0], setting, rng)
        click = rng.random(4) < theta * appeal[i, shown.order]
        lists.append(np.full(4, i))
        rewards.append(click.astype(float))
        propensities.append(shown.propensities)
        matches.append(shown.order == candidate)
    logged = Logged(
        np.concatenate(lists),
        np.concatenate(rewards),
        np.concatenate(propensities),
        np.concatenate(matches),
        np.full(n, 4),
    )
    got = evaluate(logged, resamples=200, seed=1)
    for name in ("ips", "snips"):
        assert got[name].low <= true_rate <= got[name].high, name
        assert got[name].value == pytest.approx(true_rate, rel=0.1), name
    assert got["support"].value == pytest.approx(1.0, rel=0.1)
    # read at face value, the log credits the candidate's swapped top with the engine's order
    assert not got["naive"].low <= true_rate <= got["naive"].high


def test_how_much_of_each_shown_item_a_swap_list_expected_to_show_by_hand():
    from apps.ope.pbm import seen_share
    from engine.retrieval.explore import Draw

    theta = np.array([1.0, 0.5, 0.25])
    # 3 positions, 2 pairs, swap share 0.2: rank 0 stays with 0.9, goes down with 0.1; rank 1
    # stays with 0.8, moves either way with 0.1 each; pair 0 was swapped in this list
    seen, rank = seen_share(Draw("swap", 0, 0.2, 3, 0.0, 2, 0), 3, theta)
    assert rank.tolist() == [1, 0, 2]
    assert seen == pytest.approx(
        [0.1 * 1 + 0.8 * 0.5 + 0.1 * 0.25, 0.9 * 1 + 0.1 * 0.5, 0.1 * 0.5 + 0.9 * 0.25]
    )
    # a list of an arm that does not explore: each item where it was, for certain
    assert seen_share(None, 3, theta)[0] == pytest.approx(theta)
    # an explored slot: the pool item's chance at each of the slot positions 1 and 2
    seen, rank = seen_share(Draw("slot", 2, 0.0, 3, 0.3, 1, 4), 3, theta)
    assert rank.tolist() == [0, 1, -1]
    assert seen[2] == pytest.approx(0.3 / (2 * 4) * (0.5 + 0.25))


def test_the_position_based_estimate_sees_a_reordering_the_item_position_one_cannot():
    """The candidate reverses the engine's order: almost none of its item-positions could have
    been logged, yet every item was shown somewhere."""
    from apps.ope.pbm import transferred

    rng = np.random.default_rng(2)
    theta = 1 / np.log2(np.arange(4) + 2)
    setting = ExplorationConfig(swap_share=0.3, swap_depth=4)
    n = 20_000
    items = [f"i{j}" for j in range(4)]
    appeal = rng.beta(2, 4, size=(n, 4)) * np.array([1.0, 0.8, 0.6, 0.4])
    reverse = [3, 2, 1, 0]
    true_rate = float((theta * appeal[:, reverse]).mean())
    shown, draws, rewards, lists, props, matches = [], [], [], [], [], []
    for i in range(n):
        drawn = explore(np.arange(4), np.arange(0), setting, rng)
        shown.append([items[r] for r in drawn.order])
        draws.append(drawn.draw.to_json())
        click = (rng.random(4) < theta * appeal[i, drawn.order]).astype(float)
        rewards.append(click)
        lists.append(np.full(4, i))
        props.append(drawn.propensities)
        matches.append(drawn.order == np.array(reverse))
    candidate = [[items[r] for r in reverse]] * n
    pbm = evaluate(transferred(shown, draws, rewards, candidate, theta), resamples=200, seed=3)
    for name in ("ips", "snips"):
        assert pbm[name].low <= true_rate <= pbm[name].high, name
    assert pbm["support"].value == pytest.approx(1.0, rel=0.05)
    item_position = evaluate(
        Logged(
            np.concatenate(lists),
            np.concatenate(rewards),
            np.concatenate(props),
            np.concatenate(matches),
            np.full(n, 4),
        ),
        resamples=0,
    )
    assert item_position["support"].value < 0.6  # ranks 1 and 2 only, when pair 1 swapped
