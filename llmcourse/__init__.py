"""llmcourse: the reference GPT pipeline behind the course "LLMs from scratch".

Each module follows one part of the book:

* ``data``       chapters 1-2: the course's data files, next-token (input, target) pairs
* ``tokenizer``  chapter 2: byte-level BPE from scratch and GPT-2's tokenizer
* ``attention``  chapter 3: self-attention, from the simplified form to multi-head
* ``model``      chapter 4: the GPT model and its configuration
* ``generate``   chapters 2 and 4: decoding (greedy, temperature, top-k, top-p), KV cache
* ``weights``    chapter 4: loading GPT-2's public weights, saving checkpoints
"""
