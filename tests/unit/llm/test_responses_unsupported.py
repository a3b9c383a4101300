"""`app.llm.upstream.responses_unsupported`: which upstream errors mean "no Responses API here"."""

from __future__ import annotations

from app.errors import UpstreamError
from app.llm.upstream import responses_unsupported, status_error


def test_a_404_without_a_code_is_a_502_with_the_upstreams_status_and_message() -> None:
    error = responses_unsupported(status_error(404, b'{"error": {"message": "Invalid URL (POST /v1/responses)", '
                                                    b'"type": "invalid_request_error", "param": null, "code": null}}'))
    assert error.status_code == 502 and error.code == "responses_unsupported"
    assert "404" in error.message and "Invalid URL (POST /v1/responses)" in error.message
    plain = responses_unsupported(status_error(405, b"Method Not Allowed"))
    assert plain.status_code == 502 and "405" in plain.message


def test_errors_about_the_request_pass_through() -> None:
    model = status_error(404, b'{"error": {"message": "no such model", "code": "model_not_found"}}')
    assert responses_unsupported(model) is model and model.status_code == 404
    limited = status_error(429, b'{"error": {"message": "slow down"}}')
    assert responses_unsupported(limited) is limited
    broken = UpstreamError("upstream error (500)", status_code=502)
    assert responses_unsupported(broken) is broken


def test_a_refused_connection_through_the_aiohttp_transport_is_a_502_not_a_timeout() -> None:
    import asyncio

    import httpx2
    import openai

    from app.llm.upstream import translate_error

    async def refused() -> BaseException:
        client = openai.DefaultAioHttpClient(timeout=httpx2.Timeout(5))
        try:
            await client.get("http://127.0.0.1:1/v1/models")
        except Exception as exc:  # noqa: BLE001 - the error is what this test looks at
            return exc
        finally:
            await client.aclose()
        raise AssertionError("port 1 answered")

    error = translate_error(asyncio.run(refused()))
    assert error.status_code == 502 and "could not reach" in error.message
