"""Stand-in for alpha-beta-CROWN's ``arguments`` module (tests/vnncomp/abcrown_like.py): the two globals
an ``attack.adv_saver`` plugin reads."""

Config: dict = {}
Globals: dict = {"example_idx": 0}
