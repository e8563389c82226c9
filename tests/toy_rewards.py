"""Toy rewards importable by path (`toy_rewards:digit_share`) for the run-folder, guard and fault tests:
dense enough that a random tiny model's weights move every step."""


def digit_share(completions, **_):
    """Share of digit characters in each completion."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def nan_on_third(completions, **_):
    """A broken reward: NaN for the third completion of a batch."""
    return [float("nan") if i == 2 else 0.5 for i in range(len(completions))]


def any_digit(completions, **_):
    """Binary (0/1), as SRFT's outcome split needs: 1 when the completion has a digit."""
    return [float(any(ch.isdigit() for ch in c)) for c in completions]
