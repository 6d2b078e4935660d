"""
Benchmarks for clientid-twisted: run each with C{python -m benchmarks.NAME};
each prints a table and, as its last line, one JSON object.
"""
