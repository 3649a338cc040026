#!/bin/sh
# LINES: lines and characters of input.text, counted by wc. The document arrives on
# stdin as one line of JSON; the text is taken out with sed (enough for a demo: a text
# holding \" escapes is counted approximately), JSON escapes expanded by printf %b.
set -eu
doc=$(cat)
text=$(printf '%s' "$doc" | sed -n 's/.*"text":"\(\([^"\\]\|\\.\)*\)".*/\1/p')
lines=$(printf '%b' "$text" | wc -l)
chars=$(printf '%b' "$text" | wc -m)
# A text that does not end in a newline still has a last line.
[ -n "$text" ] && lines=$((lines + 1))
printf '{"lines":%d,"chars":%d}\n' "$lines" "$chars"
