"""The teacher's instructions: upstream LLMLingua-2's ``compression_instructions.json``
(microsoft/LLMLingua, experiments/llmlingua2/data_collection), quoted verbatim as data, typos
included ("becuase"), so labels made here follow the paper's setup. Prompt id 4 is the paper's.
A user file in the same format (``{"<id>": {"system_prompt": ..., "user_prompt": ...}}``) can add
or replace prompts. A user prompt containing ``{text_to_compress}`` gets the chunk substituted there;
an empty one means the chunk itself is the user message (upstream ``GPT4_compressor.query_template``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROMPT_ID = "4"
TEXT_SLOT = "{text_to_compress}"

UPSTREAM_INSTRUCTIONS: dict[str, dict[str, str]] = {
    "0": {
        "system_prompt": "Could you please rephrase the paragraph to make it short, and keep 5% tokens?",
        "user_prompt": "",
    },
    "1": {
        "system_prompt": "Summarize the provided examples in a few sentences, maintaining all essential reasoning aspects",
        "user_prompt": "",
    },
    "2": {
        "system_prompt": "Follow these steps to shorten the given text content: 1. First, calculate the amount of information contained in each sentence, and remove sentences with less information. 2. Next, further condense the text by removing stop words, unnecessary punctuation, and redundant expressions. Refine the content while ensuring that all key information is retained. Let's do it step by step.",
        "user_prompt": "",
    },
    "3": {
        "system_prompt": "Remove redundancy and express the text concisely in English, ensuring that all key information and reasoning processes are preserved.",
        "user_prompt": "",
    },
    "4": {
        "system_prompt": "You are an excellent linguist and very good at compressing passages into short expressions by removing unimportant words, while retaining as much information as possible.",
        "user_prompt": "Compress some text to short expressions, and such that you (GPT-4) can reconstruct it as close as possible to the original. Unlike the usual text compression, I need you to comply with the 5 conditions below: 1. You can ONLY remove unimportant words. 2. Do not change the order of words. 3. Do not change the original words, e.g. 'asking'->'ask' is NOT OK, 'current'->'now' is NOT OK. 4. Do not use abbreviations or emojis, e.g. 'without'->'w/o' is NOT OK, 'as soon as possible'->'ASAP' is NOT OK. 5. Do not add new words or symbols, this is very important. For example, 'dedicate 3 hours to each chapter'->'3 hours/chapter' is NOT OK because you add new token '/', just compress it into '3 hours each chapter'. '30 eggs plus 20 eggs equals 50 eggs'->'30+20=50' is also NOT OK becuase you add new symbols + and =, just compress it into '30 plus 20 equals 50'. \nCompress the origin aggressively by removing words only. Compress the origin as short as you can, while retaining as much information as possible. \nIf you understand, please compress the following text: \n{text_to_compress}\nThe compressed text is: ",
    },
}


@dataclass(frozen=True)
class Instruction:
    system_prompt: str
    user_prompt: str

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one chunk, as upstream builds them (no truncation: chunks are small)."""
        if self.user_prompt and TEXT_SLOT in self.user_prompt:
            content = self.user_prompt.replace(TEXT_SLOT, text)
        else:
            content = text
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": content})
        return messages


def load_instruction(prompt_id: str | int = DEFAULT_PROMPT_ID, instructions_file: str | None = None) -> Instruction:
    """Prompt ``prompt_id`` from ``instructions_file`` (JSON, upstream format) or upstream's set."""
    table = dict(UPSTREAM_INSTRUCTIONS)
    if instructions_file:
        table.update(json.loads(Path(instructions_file).read_text(encoding="utf-8")))
    key = str(prompt_id)
    if key not in table:
        raise ValueError(f"unknown prompt id {key!r}; available: {', '.join(sorted(table))}")
    entry = table[key]
    return Instruction(system_prompt=entry.get("system_prompt", ""), user_prompt=entry.get("user_prompt", ""))
