"""K2's chaos suite: real ``k2`` processes, real faults, tables checked against exact truth.

``python -m chaos`` (``make chaos``) runs every scenario of :mod:`chaos.scenarios` on both state
backends for a number of seeds; each run prints one line and a failure names the seed that replays it.
"""

__all__: list[str] = []
