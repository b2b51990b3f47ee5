"""Run a model card's transformers snippet (its first ```python block) as a reader would
paste it, from the folder given, and print what it printed: the card's "How to use" must run."""
import os
import re
import sys

readme, cwd = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
block = re.search(r"```python\n(.*?)```", text, re.S)
assert block, "the card has no python snippet"
os.chdir(cwd)
exec(compile(block.group(1), "card snippet", "exec"), {"__name__": "__main__"})
