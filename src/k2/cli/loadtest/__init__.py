"""``k2 load-test``: overload a real pipeline on purpose and prove nothing was lost.

It drives feeds, the producer and the pipeline together, so it lives at the top of the layers,
beside the command that runs it (``command``), not in ``k2.resilience``, which they all use.
"""
