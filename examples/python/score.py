"""score: a sentiment score of a text from a tiny lexicon, an exec function of asyncfn.

asyncfn keeps this script running and writes each batch to its standard input as one line,
{"data": [[0, text], [1, text], ...]}, then reads its answer from its standard output as
one line, {"data": [[0, score], [1, score], ...]}. A row's score is (positive words -
negative words) / words, from -1 to 1; NULL, or a text without words, scores NULL.
Standard error goes to asyncfn's log. From Go (package process):

    cfg := process.DefaultConfig()
    cfg.Name, cfg.Command = "score", []string{"python3", "examples/python/score.py"}
    pool, err := process.New(ctx, cfg, logger) // pool.Function() is the function to serve
"""
import json
import re
import sys

POSITIVE = {"good", "great", "excellent", "love", "happy", "fast", "nice", "best"}
NEGATIVE = {"bad", "poor", "terrible", "hate", "sad", "slow", "broken", "worst"}


def score(text):
    words = re.findall(r"[a-z']+", text.lower()) if isinstance(text, str) else []
    if not words:
        return None
    return (sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)) / len(words)


for line in sys.stdin:
    rows = json.loads(line)["data"]
    print(json.dumps({"data": [[row[0], score(row[1])] for row in rows]}), flush=True)
