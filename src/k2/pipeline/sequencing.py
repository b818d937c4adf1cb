from k2.pipeline.checks import NoChecks


class SequenceChecks(NoChecks):
    def __init__(self, settings: object) -> None:
        pass
