"""choose_strategy: the playbook's decision function, rule by rule, in its order, with its fallback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mesh.patterns import AdaptiveMesh, Burst, Choreography, Commander, Pipeline, choose_strategy
from mesh.patterns.strategy import FALLBACK

pytestmark = [pytest.mark.fast_check, pytest.mark.timeout(10)]


@pytest.mark.parametrize(("context", "name", "pattern"), [
    ({"workflow": "linear", "speed": "normal"}, "Sequential Pipeline", Pipeline),
    ({"workflow": "linear"}, "Sequential Pipeline", Pipeline),
    ({"tasks": "independent", "speed": "critical"}, "Parallel Burst", Burst),
    ({"workflow": "complex", "flexibility": "high"}, "Event-Driven Choreography", Choreography),
    ({"decisions": "complex", "authority": "clear"}, "Hierarchical Command", Commander),
    ({"environment": "dynamic", "resilience": "critical"}, "Adaptive Mesh", AdaptiveMesh),
])
def test_each_rule_of_the_playbook_names_its_pattern_and_class(context, name, pattern):
    strategy = choose_strategy(context)
    assert (strategy.name, strategy.pattern, strategy.fallback) == (name, pattern, False)
    assert strategy.module.startswith("mesh.patterns.")


def test_the_first_matching_rule_wins_in_the_playbooks_order():
    # Linear but speed-critical work skips the pipeline; independent tasks then make it a burst.
    assert choose_strategy(workflow="linear", speed="critical", tasks="independent").pattern is Burst
    assert choose_strategy(workflow="linear", speed="slow", tasks="independent").pattern is Pipeline
    assert choose_strategy(workflow="complex", flexibility="high", decisions="complex", authority="clear").pattern is Choreography


def test_nothing_that_matches_starts_sequential():
    for context in ({}, {"workflow": "linear", "speed": "critical"}, {"tasks": "independent"},
                    {"environment": "dynamic", "resilience": "nice to have"}):
        strategy = choose_strategy(context)
        assert strategy.fallback and strategy.name == FALLBACK == "Start with Sequential, evolve as needed"
        assert strategy.pattern is Pipeline


def test_context_comes_as_a_dict_an_object_or_keywords_and_case_does_not_matter():
    obj = SimpleNamespace(tasks="Independent", speed="CRITICAL")
    assert choose_strategy(obj).pattern is Burst
    assert choose_strategy({"tasks": "independent"}, speed="critical").pattern is Burst


def test_an_unknown_key_is_refused_rather_than_silently_falling_back():
    with pytest.raises(ValueError, match="speeed"):
        choose_strategy(speeed="critical")
