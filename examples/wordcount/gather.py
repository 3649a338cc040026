"""WORDCOUNT: gathers what its children found. It runs after WORDS, LINES and TOP
answered, with their replies in `children`; a child that failed is reported, not
hidden (the node itself then answers 502, as every node whose child failed)."""
import json
import sys

doc = json.load(sys.stdin)
summary = {}
failed = {}
for child in doc["children"]:
    if child["outcome"] == "ok":
        summary.update(child.get("result") or {})
    else:
        failed[child["node"]] = f'{child["outcome"]} {child["code"]}: {child["message"]}'
if failed:
    summary["failed"] = failed
json.dump(summary, sys.stdout)
