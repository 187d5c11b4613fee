"""Wire-faithful fake OpenAI and Anthropic servers for tests, scriptable per request."""

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.base import Call, FakeProvider, Fault, Reply
from tests.fakes.openai_server import FakeOpenAI

__all__ = ["Call", "FakeAnthropic", "FakeOpenAI", "FakeProvider", "Fault", "Reply"]
