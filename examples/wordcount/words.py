"""WORDS: how many words input.text has. Reads the function document on stdin, prints
one JSON value on stdout (the node's result)."""
import json
import sys

doc = json.load(sys.stdin)
text = (doc.get("input") or {}).get("text", "")
if not isinstance(text, str):
    print("input.text must be a string", file=sys.stderr)
    sys.exit(2)
json.dump({"words": len(text.split())}, sys.stdout)
