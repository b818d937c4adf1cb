"""``k2 demo``: K2 told in chapters, each shown on the running system and ended by a check.

It drives feeds, ingest processes, the lake, queries and the API together, so it lives at the top
of the layers beside the command that runs it (``k2.cli.demo_cmd``), like the load test.
"""
