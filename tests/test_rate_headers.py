"""A provider's rate-limit header names belong to its plugin: it registers them in a
neutral form (``dlg.plugin.RateHeaders``) and core reads limits, waits and resets through
what was registered, so a third-party provider's own names work as OpenAI's do."""

from __future__ import annotations

import types

import pytest

from dlg.errors import PluginError
from dlg.models.headers import known, reports_limits
from dlg.models.pacing import Limiter, pacer
from dlg.models.ratelimits import is_rate_limit, wait_from_headers
from dlg.plugin import RateHeaders, hookimpl
from dlg.registrations import model_providers

ACME = RateHeaders(limits={"acme-quota-rpm": "rpm", "acme-quota-tpm": "tpm"},
                   waits=(("acme-backoff-ms", "ms"),),
                   resets=(("acme-quota-reset", "acme-quota-left", "duration"),),
                   answered=True)


def _refused(headers: dict[str, str]) -> Exception:
    exc = Exception("429 Too Many Requests")
    exc.response = types.SimpleNamespace(status_code=429, headers=headers)  # type: ignore[attr-defined]
    return exc


def _acme(pm, rate_headers) -> None:
    class Acme:
        @hookimpl
        def register_models(self, register):
            register("acme", lambda model, options: None, rate_headers=rate_headers)

    pm.register(Acme(), name="acme")


def test_a_third_party_plugin_s_header_names_are_learned_and_waited_on(pm):
    _acme(pm, ACME)
    assert ACME in known() and reports_limits("acme")
    limiter = Limiter(pacer, "acme:m||")
    assert limiter.learn({"acme-quota-rpm": "120", "acme-quota-tpm": "9000"}) is True
    assert limiter.learned == {"rpm": 120, "tpm": 9000}
    assert wait_from_headers(_refused({"acme-backoff-ms": "1500"})) == 1.5
    assert wait_from_headers(_refused({"acme-quota-reset": "2s", "acme-quota-left": "0"})) == 2


def test_core_knows_no_provider_s_names_but_http_s_retry_after(pm):
    """With no plugin registering them, OpenAI's names mean nothing to core; the
    built-in openai plugin registers them."""
    for name in [n for n, _ in pm.list_name_plugin() if n.endswith(("openai", "anthropic"))]:
        pm.unregister(name=name)
    limiter = Limiter(pacer, "k")
    assert limiter.learn({"x-ratelimit-limit-requests": "60"}) is False
    assert wait_from_headers(_refused({"retry-after-ms": "1500"})) is None
    assert wait_from_headers(_refused({"retry-after": "3"})) == 3


def test_the_built_in_providers_register_theirs(pm):
    assert reports_limits("openai") and reports_limits("openai-compatible")
    assert not reports_limits("anthropic")  # its answers keep no headers: 429s teach it
    limiter = Limiter(pacer, "k")
    assert limiter.learn({"anthropic-ratelimit-input-tokens-limit": "4000",
                          "anthropic-ratelimit-tokens-limit": "5000"}) is True
    assert limiter.learned == {"tpm": 4000}


def test_a_plugin_says_which_429s_are_no_rate_limit_and_core_knows_none(pm):
    """A 429 that is a bill to pay (OpenAI's "insufficient_quota") is not waited for;
    which texts say so is the provider plugin's to register, not core's."""
    import inspect

    import dlg.models.ratelimits

    billed = Exception("Error code: 429 - {'error': {'code': 'acme_credits_exhausted'}}")
    billed.status_code = 429  # type: ignore[attr-defined]
    quota = Exception("Error code: 429 - {'error': {'code': 'insufficient_quota'}}")
    quota.status_code = 429  # type: ignore[attr-defined]
    assert is_rate_limit(billed) is True  # a 429 like any other, until a plugin says
    assert is_rate_limit(quota) is False  # the built-in openai plugin says so
    _acme(pm, RateHeaders(not_limits=("acme_credits_exhausted",)))
    assert is_rate_limit(billed) is False
    assert is_rate_limit(_refused({})) is True  # a plain 429 still is one
    assert "insufficient_quota" not in inspect.getsource(dlg.models.ratelimits)
    for name in [n for n, _ in pm.list_name_plugin() if n.endswith("openai")]:
        pm.unregister(name=name)
    assert is_rate_limit(quota) is True  # core alone knows no provider's texts


@pytest.mark.parametrize("bad, said", [
    (RateHeaders(limits={"acme-quota": "rps"}), "'acme-quota' -> 'rps'"),
    (RateHeaders(waits=(("acme wait", "ms"),)), "waits: ('acme wait', 'ms')"),
    (RateHeaders(resets=(("acme-reset", "", "fortnights"),)), "resets: ("),
    (RateHeaders(not_limits=("",)), "not_limits: '' is not"),
    (RateHeaders(not_limits="quota"), "not_limits must be a tuple"),
    ({"acme-quota": "rpm"}, "expected a dlg.plugin.RateHeaders"),
])
def test_headers_dlg_cannot_read_are_the_plugin_s_clear_error(pm, bad, said):
    _acme(pm, bad)
    with pytest.raises(PluginError) as caught:
        model_providers(pm)
    assert "plugin 'acme' registered rate_headers for 'acme'" in str(caught.value)
    assert said in str(caught.value)


async def test_an_answer_with_a_response_format_still_states_the_limits():
    """OpenAI's structured output goes through another call of the SDK that langchain-
    openai keeps no headers of (and warns if asked to): the plugin's HTTP client reads
    them, so a turn with an output schema ends the slow start too."""
    pytest.importorskip("langchain_openai")
    import dlg

    from .servers import LimitedOpenAI

    mode = {"name": "s", "turns": [{"id": "a", "role": "A", "prompt": "go",
                                    "output": {"schema": {"type": "object"}}}]}
    with LimitedOpenAI(requests=50, window=1.0, reply='{"ok": true}') as server:
        spec = f"openai-compatible:m?base_url={server.base_url}"
        d = await dlg.run(mode, model=spec)
        assert "response_format" in server.requests[0]["body"]
    assert d.status == "completed", d.error
    limiter = pacer.for_label(spec, None)
    assert limiter is not None and limiter.learned == {"rpm": 50 * 60}
    assert not limiter.probing


def test_a_plugin_s_endpoint_of_is_asked_for_an_object_and_checked(pm):
    """``register(endpoint_of=...)``: where a chat model given as an object goes; one that
    raises says nothing, one that is not a function is the plugin's clear error."""
    from dlg.registrations import endpoint_of

    class Finder:
        @hookimpl
        def register_models(self, register):
            register(endpoint_of=lambda model: 1 / 0 if model == "broken" else (
                "http://127.0.0.1:9/v1" if model == "mine" else None))

    pm.register(Finder(), name="finder")
    assert endpoint_of("mine", pm) == "http://127.0.0.1:9/v1"
    assert endpoint_of("other", pm) is None and endpoint_of("broken", pm) is None

    class Bad:
        @hookimpl
        def register_models(self, register):
            register(endpoint_of="http://127.0.0.1:9/v1")

    pm.register(Bad(), name="bad")
    with pytest.raises(PluginError, match="plugin 'bad' registered endpoint_of="):
        model_providers(pm)
