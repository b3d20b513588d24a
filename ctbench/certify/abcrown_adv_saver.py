"""alpha-beta-CROWN ``attack.adv_saver`` plugin: keep each CSV row's counterexample (runs inside it).

alpha-beta-CROWN's stock saver writes every counterexample of a CSV batch to the one file
``attack.cex_path``, so each falsified row overwrites the previous one. ctbench's generated config
names this file (``attack.adv_saver: Customized("<this file>", "save")``): it calls the stock saver,
then copies the file to ``<cex stem>_<row><suffix>``, the row being the instance's index in the CSV
(``example_idx`` + ``data.start``). Imported by alpha-beta-CROWN's process, never by ctbench, so it
may import alpha-beta-CROWN's own modules (``arguments``, ``attack.attack_utils``).
"""

import os
import shutil


def save(adv_input, adv_output, res_path):
    import arguments  # alpha-beta-CROWN's
    from attack.attack_utils import default_adv_saver

    default_adv_saver(adv_input, adv_output, res_path)
    row = int(arguments.Globals["example_idx"]) + int(arguments.Config["data"]["start"])
    stem, ext = os.path.splitext(res_path)
    shutil.copyfile(res_path, f"{stem}_{row}{ext}")
