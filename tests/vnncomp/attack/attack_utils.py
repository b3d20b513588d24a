"""Stand-in for alpha-beta-CROWN's ``attack.attack_utils.default_adv_saver`` (tests/vnncomp/abcrown_like.py):
writes the counterexample as ``((X_i v) … (Y_j v))`` to ``res_path``, overwriting it, as the real one does."""


def default_adv_saver(adv_input, adv_output, res_path):
    lines = [f"(X_{i}  {v!r})" for i, v in enumerate(adv_input)]
    lines += [f"(Y_{j}  {v!r})" for j, v in enumerate(adv_output)]
    with open(res_path, "w") as f:
        f.write("(" + "\n".join(lines) + ")\n")
