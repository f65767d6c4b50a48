"""EMKD's block composition search (BCS): which per-stage block counts suit a student, at about constant size.

    python search.py --model_t resnet110 --path_t ./save/models/resnet110_vanilla/ckpt_epoch_240.pth \
        --distill crd --mc 1 --mc_weight 0.001 --model_s myresnet20 --block_depth 3,3,3 -a 0 -b 0.8 --trial 1

Takes every train_student.py flag. With n_s the student's nominal blocks per stage (myresnet20: 3) and n_t the
teacher's (resnet110: 18), candidates [x, y, z] are visited in two phases; each trades one block of a deeper
(wider) stage for four of the stage before it, which keeps the parameter count about constant:

* phase 1 starts at [n_s, n_s, n_s] and repeats z -= 1, y += 4 while z >= 1 and y <= n_t;
* phase 2 starts from the best phase-1 (y, z) at [n_s + 4, y - 1, z] and repeats y -= 1, x += 4 while
  y >= 1 and x <= n_t.

For resnet110 -> myresnet20: [3,3,3], [3,7,2], [3,11,1], then (if [3,7,2] won) [7,6,2], [11,5,2], [15,4,2].

Each candidate is a full train_student.py run (all epochs) in its own folder under
``<save_dir>/search/<search name>/student_model/``; EMKD wrote every candidate into one folder. A candidate's
score is its best accuracy over the epochs on the selection split:

* ``--select_on val`` (default): a stratified ``--val_fraction`` of the training set (seed ``--val_seed``) is
  held out; candidates train on the rest and are scored on it, so the test set plays no part in the choice.
  The per-epoch "test" numbers in these candidate folders are on that held-out split; the summary adds each
  candidate's test accuracy after its last epoch.
* ``--select_on test``: EMKD's procedure, training on the whole training set and scoring on the test set.

Milestone weights follow each candidate's own depths (nominal / actual per stage). EMKD recomputed them only
for a method named 'crd_mlkd', so its CRD searches kept the starting candidate's weights.

At the end a markdown table of all candidates is printed and written to ``search_summary.md`` (with
``search_result.json``) in the search folder.
"""
from __future__ import annotations

from assembly.search import search
from helper.run import run_cli


def main(argv=None):
    return search(argv)


if __name__ == "__main__":
    run_cli(main)
