"""Wire-faithful fake OpenAI and Anthropic servers for tests, scriptable per request."""

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.base import FakeProvider, Fault, Reply
from tests.fakes.openai_server import FakeOpenAI

__all__ = ["FakeAnthropic", "FakeOpenAI", "FakeProvider", "Fault", "Reply"]
