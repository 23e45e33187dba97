"""python -m agent.devtools.bench.peers [ROUNDS [MEMBERS]]: the three decision paths side by side."""

import json
import sys

from agent.devtools.bench.peers import compare

arguments = [int(a) for a in sys.argv[1:3]]
print(json.dumps(compare(*(arguments + [500, 100_000][len(arguments):])), indent=1))
