"""The recipe's serving matrix (*.yaml) and the test module that runs it.

Installed, this folder is the package `pytest_dsr1.test_matrix`, so `pip install pytest-dsr1` carries the
recipe: `pytest -m h200 --dsr1-model fp8` runs it in any project.
"""
