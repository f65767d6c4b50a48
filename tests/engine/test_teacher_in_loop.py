"""What the training loop owes the teacher and every method of a side-by-side run (mutation-testing gaps)."""
import copy

import torch

from engine.epoch import train_runs_one_epoch
from engine.fit import build_optimizer
from engine.step import StudentRun, StudentStep, loss_weights, step_runs
from engine.teacher import Teacher

from .test_host_syncs import CPU, batch_of, build, options, tiny_set


def student_run(method, opt, data):
    student, teacher, distiller = build(method, opt, data)
    run = StudentRun(opt, student, distiller, optimizer=build_optimizer(student, distiller, opt, CPU),
                     step=StudentStep(student, distiller))
    return run, Teacher.of(teacher)


def test_the_teacher_is_frozen_in_eval_mode_at_the_start_of_every_epoch():
    opt = options(batch_size=10)
    data = tiny_set(40)
    run, teacher = student_run("kd", opt, data)
    teacher.train()  # as anything between epochs may leave it (validation code, a user's hook)
    stats = {k: v.clone() for k, v in teacher.state_dict().items()}
    train_runs_one_epoch(1, data, [run], opt, CPU, teacher)
    assert not teacher.training
    # in train mode its BatchNorms would have moved their running statistics on the training batches
    assert all(torch.equal(stats[k], v) for k, v in teacher.state_dict().items())


def test_the_teacher_serves_the_features_of_every_method_of_a_side_by_side_step():
    opt = options()
    data = tiny_set(40)
    kd, teacher = student_run("kd", opt, data)  # logits only, and first: its needs must not decide for the others
    attention, _ = student_run("attention", opt, data)
    alone = copy.deepcopy(attention)
    batch = batch_of(data, 0)
    weights = loss_weights(opt)
    _, [_, (loss, terms, _)] = step_runs(batch, 1, [kd, attention], [weights, weights], opt, CPU, teacher)
    _, [(loss_alone, terms_alone, _)] = step_runs(batch, 1, [alone], [weights], opt, CPU, teacher)
    assert terms["kd"] > 0 and torch.equal(terms["kd"], terms_alone["kd"]) and torch.equal(loss, loss_alone)
