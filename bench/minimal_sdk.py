"""The floor `promptctl eval` is measured against: the same requests through the same openai
SDK and nothing else (an AsyncOpenAI client, an asyncio.Semaphore, chat.completions.create).

Run: python bench/minimal_sdk.py BASE_URL N CONCURRENCY  -> prints how many answers came back.
"""

from __future__ import annotations

import asyncio
import sys

import openai


async def main(url: str, n: int, concurrency: int) -> int:
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=4, timeout=60)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str | None:
        async with gate:
            res = await client.chat.completions.create(
                model="bench-model", messages=[{"role": "user", "content": f"Score: {i}"}],
                temperature=0, max_tokens=8)
            return res.choices[0].message.content

    answers = await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return sum(1 for a in answers if a)


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
