"""A/B on one machine: is B slower than A? No stored baseline, no pytest and no vLLM here.

A is the run as configured; B changes one or more things (`--dsr1-ab`): another interpreter with another vLLM
(`python=PATH`), a server setting (`set=[CONFIG:]KEY=VALUE`, as `--dsr1-set` takes it) or an environment
variable of the server (`env=NAME=VALUE`). Parts combine: B changes all of them.

Whole server starts move by 20 to 35% on shared machines, so the unit of comparison is the start, not the
request: each config gets fresh servers in ABBA order (`abba_order`), which cancels a linear drift within each
round, and each start's median is one observation. An item's verdict compares the logs of B's and A's start
medians with Welch's t-test, and gives B/A - 1 with its interval at 1 - 2 alpha (90%), whose bounds are the two
one-sided tests at alpha:

- `B slower`: significantly worse (p <= alpha) and beyond the metric's tolerance: the item fails;
- `B faster`: significantly better and beyond the tolerance;
- `no difference`: the interval lies within +-tolerance (equivalence, two one-sided tests);
- `inconclusive`: none of these; the reason says what it would take.

A config's verdict is taken start by start: each start's value is the mean over the config's items of its log
start medians (each centred on the item's own level), and B's start values are tested against A's in the same way,
against the config's `config_tolerance`. The items of one start share a server and a stretch of the machine's
time, so they are not independent observations; the starts are. "Slower" reads for every metric, latencies too.

Modules: spec (what B changes, the ABBA order), starts (the starts and what each measured), judge
(B against A per item and per config), check (an item's Decision), run (the starts, made by the runner),
report (tables, summary.md and results.json parts).
"""
