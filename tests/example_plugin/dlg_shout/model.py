"""A LangChain chat model that answers with the last paragraph of its prompt, in capitals."""

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ShoutChatModel(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "shout"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        text = str(messages[-1].content).split("\n\n")[-1].upper() + "!"
        message = AIMessage(content=text, usage_metadata={
            "input_tokens": 3, "output_tokens": 2, "total_tokens": 5})
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        return self._generate(messages, stop, **kwargs)
