"""A model the evaluation could not reach (404: not served yet; 5xx or connection failures
after the retries) gets no verdict: the evaluation fails, the cycle retries its step and then
evaluates the same model again, never training again (r14g #3). A 400 (a content filter, a
prompt too long) is still the candidate's wrong answer, and so are a few 5xx. Through a real
proxy and the fake upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.evaluate import EvalOptions, evaluate
from tests import test_cycle
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_cycle import config, run, the_current_model_is_worse
from tests.test_evaluate import BASELINE, CANDIDATE, make_export, validation_lines
from tuneloop.errors import ModelUnreachable

loop = test_cycle.loop  # approved traffic, the alias on the current model, fast fine-tuning
JUDGE = "judge-model"
FAST = {"retries": 0, "backoff_s": 0.01, "max_backoff_s": 0.01}


def test_a_candidate_not_served_fails_the_evaluation_without_a_verdict(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa", count=70)
    n = validation_lines(data)
    proxy.upstream.state.judges[JUDGE] = judge = FakeJudge(prefer="echo:")
    # every request of the candidate answers 404 (a LoRA still deploying, a wrong name)
    options = EvalOptions("fail-404", BASELINE, scorer="judge", judge_model=JUDGE, **FAST)
    with pytest.raises(ModelUnreachable, match=rf"the candidate fail-404 could not be reached "
                                               rf"on {n} of {n} evaluation requests \(404: "):
        evaluate(proxy.admin(), data, options, api_key=UPSTREAM_KEY)
    assert judge.asked == 0  # no judge paid for answers that never came
    [stored] = proxy.admin().eval_runs(limit=1)
    assert stored["status"] == "failed" and "could not be reached" in stored["error"]
    assert stored["margin"] is None

    # 500s on a third of its requests (after the retries): not scored either
    proxy.upstream.state.model_error_rate[CANDIDATE] = 0.3
    with pytest.raises(ModelUnreachable, match=r"the candidate .* could not be reached on "
                                               r"\d+ of \d+ evaluation requests \(gave up "):
        evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE, **FAST),
                 api_key=UPSTREAM_KEY)

    # a few (at most a tenth): its wrong answers, as any failed request in production
    proxy.upstream.state.model_error_rate[CANDIDATE] = 0.05
    proxy.upstream.state.model_calls.clear()
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE, **FAST),
                      api_key=UPSTREAM_KEY)
    assert 0 < report.models["candidate"]["errors"] <= n / 10
    assert report.paired is not None and report.paired["candidate_failed"] > 0

    # a 400 on every request is the model's own failure (a content filter): scored, lost
    report = evaluate(proxy.admin(), data, EvalOptions("fail-400", BASELINE, **FAST),
                      api_key=UPSTREAM_KEY)
    assert report.models["candidate"]["errors"] == n and report.margin < 0

    # the current model unreachable says nothing either: no verdict for the candidate
    with pytest.raises(ModelUnreachable, match="the baseline fail-503 could not be reached"):
        evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, "fail-503", **FAST),
                 api_key=UPSTREAM_KEY)


def test_the_cycle_retries_an_unreachable_candidate_and_never_trains_it_again(
        loop: ProxyServer, tmp_path: Path) -> None:
    the_current_model_is_worse(loop)
    # the fine-tuned model is not served yet: 404 to every request naming it
    unserved = "ft:gpt-4o-mini-2024-07-18:tuneloop-fake:support:"
    loop.upstream.state.fail_containing[unserved] = 404
    cfg = config(tmp_path, evaluate={"retries": 0})
    outcomes = [run(loop, cfg) for _ in range(3)]  # max_step_attempts = 3
    assert [o.status for o in outcomes] == ["error", "error", "failed"], outcomes[0].message
    assert "step evaluate failed: the candidate ft:gpt-4o-mini-2024-07-18:tuneloop-fake:" \
           "support:" in outcomes[0].message
    assert "could not be reached on 9 of 9 evaluation requests (404: " in outcomes[0].message
    first = outcomes[0].run
    assert {o.run["id"] for o in outcomes} == {first["id"]}  # the same run, at `evaluate`
    assert outcomes[1].run["step"] == "evaluate"
    assert outcomes[2].run["outcome"] == "failed"  # never `not_promoted`
    assert all(r["status"] == "failed" for r in loop.admin().eval_runs())

    del loop.upstream.state.fail_containing[unserved]  # now it is served
    again = run(loop, cfg)
    assert again.status == "active", again.message  # evaluated, passed: its canary
    assert again.run["id"] != first["id"]
    assert again.run["state"]["resumed_from"] == first["id"]
    assert again.run["state"]["fine_tuned_model"] == first["state"]["fine_tuned_model"]
    assert len(loop.upstream.state.jobs) == 1  # the paid model, not a second job


def test_a_model_no_route_reaches_says_it_went_to_the_default_upstream(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa", count=40)
    together = "tuneloop-fake/Meta-Llama-3.1-8B-Instruct-Reference-support-0000abcd"
    proxy.upstream.state.model_error_rate[together] = 1.0
    proxy.upstream.state.model_error_status[together] = 404  # OpenAI does not know it
    with pytest.raises(ModelUnreachable) as caught:
        evaluate(proxy.admin(), data, EvalOptions(together, BASELINE, **FAST),
                 api_key=UPSTREAM_KEY)
    said = caught.value.message
    assert f"the candidate {together} could not be reached" in said
    assert f"{together} is not an alias, so the proxy sent its requests to its default " \
        "upstream, which does not serve it" in said
    assert f"`tuneloop promote --alias NAME --model {together} --base-url URL --api-key-env " \
        "VAR`" in said
    # routed (an alias whose target does not serve it): no word of the default upstream
    proxy.admin().promote("tg-eval", together)
    with pytest.raises(ModelUnreachable) as routed:
        evaluate(proxy.admin(), data, EvalOptions("tg-eval", BASELINE, **FAST),
                 api_key=UPSTREAM_KEY)
    assert "could not be reached" in routed.value.message
    assert "default upstream" not in routed.value.message
