"""Render a chat with a model folder's tokenizer, as a transformers user would.

Usage: chat_render.py DIR -> JSON {"text": apply_chat_template(...), "ids": ids of that text}.
"""
import json
import sys

from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(sys.argv[1])
messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
text = tok.apply_chat_template(messages, tokenize=False)
print(json.dumps({"text": text, "ids": tok(text, add_special_tokens=False)["input_ids"]}))
