"""The timm peer for benchmarks/peers/classification.py: timm's train.py code path, single process.

timm's ``train.py`` is not distributed: it lives only in timm's source repository, not in the
wheel or the sdist, and nothing can be downloaded here. This file re-assembles what train.py
does for one process on the CPU from timm's own library pieces, wired the way train.py wires
them (read from train.py in huggingface/pytorch-image-models; the installed timm library is
used as is):

* an argument parser with train.py's option names and defaults for everything the path below
  reads; the benchmark's settings are given on the command line as they would be to train.py;
* ``utils.init_distributed_device`` (``--device cpu``), ``utils.random_seed``;
* ``create_model`` with train.py's model kwargs; ``resolve_data_config(vars(args), model)``;
* lr from ``--lr-base`` scaled by batch size when ``--lr`` is not given;
* ``create_optimizer_v2(model, **optimizer_kwargs(args))``: with ``--opt sgd`` that is SGD with
  Nesterov momentum and no weight decay on biases and norm parameters (timm's default
  ``filter_bias_and_bn``);
* ``create_dataset`` (ImageFolder reader, train / validation split search) and
  ``create_loader`` with the fast prefetcher (uint8 collate, normalisation in PrefetchLoader on
  the device), drop_last on the training loader, persistent workers, worker seeding 'all';
* the loss train.py picks (cross-entropy, or LabelSmoothingCrossEntropy if ``--smoothing``);
* ``create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=...)``, stepped
  by ``step_update(num_updates)`` after every update (``--sched-on-updates``) and by
  ``step(epoch + 1, metric)`` after every epoch;
* train_one_epoch and validate as train.py has them: ``utils.AverageMeter`` for loss, update
  and data time, a log line every ``--log-interval`` updates, top-1 / top-5 from
  ``utils.accuracy``;
* ``utils.get_outdir`` + args.yaml, ``utils.update_summary`` (summary.csv) and
  ``utils.CheckpointSaver.save_checkpoint`` after every epoch (last, numbered history of
  ``--checkpoint-hist``, model_best).

Left out, because it is off by default or has no meaning for one CPU process: DDP and
distributed samplers / BN sync, AMP and loss scalers, mixup / cutmix and their losses, JSD /
BCE losses, AugMix splits and split BN, model EMA, gradient accumulation, gradient clipping,
channels_last, torchscript / torch.compile, resume and recovery checkpoints, NaFlex and
scheduled batch sizes, wandb. With ``--no-aug`` the augmentation options are not used.

For the benchmark (see classification.py), ``--input-size 3 32 32 --crop-pct 1.0 --no-aug``
makes both timm transforms identity resizes at 32 px, so the input equals the bare loop's
ToTensor + Normalize (ImageNet mean / std, resnet18's default) to float rounding; timm's
default crop_pct (0.95 for resnet18) would resize to 33 px and centre-crop. Prints one JSON
line: train images/s (training iterations only), final-epoch val top-1 (fraction), in-process s.

    python benchmarks/peers/classification_timm.py DATA --model resnet18 --num-classes 10 \\
        --input-size 3 32 32 --crop-pct 1.0 -b 64 --opt sgd --lr 0.05 --weight-decay 5e-4 \\
        --sched-on-updates --warmup-epochs 0 --smoothing 0 --no-aug -j 2 --epochs 15 \\
        --device cpu --output OUT --experiment run
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import OrderedDict
from contextlib import suppress
from datetime import datetime

import torch
import torch.nn as nn
import yaml
from timm import utils
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy
from timm.models import create_model, safe_model_name
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

_logger = logging.getLogger("train")


def parser() -> argparse.ArgumentParser:
    """train.py's options (names and defaults) for what this path reads."""
    p = argparse.ArgumentParser(description="timm train.py path, single process")
    add = p.add_argument
    add("data_dir")
    add("--dataset", default="")
    add("--train-split", default="train")
    add("--val-split", default="validation")
    add("--class-map", default="")
    add("--model", default="resnet50")
    add("--num-classes", type=int, default=None)
    add("--in-chans", type=int, default=None)
    add("--img-size", type=int, default=None)
    add("--input-size", type=int, nargs=3, default=None)
    add("--crop-pct", type=float, default=None)
    add("--mean", type=float, nargs="+", default=None)
    add("--std", type=float, nargs="+", default=None)
    add("--interpolation", default="")
    add("-b", "--batch-size", type=int, default=128)
    add("-vb", "--validation-batch-size", type=int, default=None)
    add("--gp", default=None)
    add("--drop", type=float, default=0.0)
    add("--drop-path", type=float, default=None)
    add("--drop-block", type=float, default=None)
    add("--bn-momentum", type=float, default=None)
    add("--bn-eps", type=float, default=None)
    add("--opt", default="sgd")
    add("--opt-eps", type=float, default=None)
    add("--opt-betas", type=float, nargs="+", default=None)
    add("--momentum", type=float, default=0.9)
    add("--weight-decay", type=float, default=2e-5)
    add("--layer-decay", type=float, default=None)
    add("--sched", default="cosine")
    add("--sched-on-updates", action="store_true")
    add("--lr", type=float, default=None)
    add("--lr-base", type=float, default=0.1)
    add("--lr-base-size", type=int, default=256)
    add("--lr-base-scale", default="")
    add("--lr-noise", type=float, nargs="+", default=None)
    add("--lr-noise-pct", type=float, default=0.67)
    add("--lr-noise-std", type=float, default=1.0)
    add("--lr-cycle-mul", type=float, default=1.0)
    add("--lr-cycle-decay", type=float, default=0.5)
    add("--lr-cycle-limit", type=int, default=1)
    add("--lr-k-decay", type=float, default=1.0)
    add("--warmup-lr", type=float, default=1e-5)
    add("--min-lr", type=float, default=0.0)
    add("--epochs", type=int, default=300)
    add("--decay-milestones", type=int, nargs="+", default=[90, 180, 270])
    add("--decay-epochs", type=float, default=90)
    add("--warmup-epochs", type=int, default=5)
    add("--warmup-prefix", action="store_true")
    add("--cooldown-epochs", type=int, default=0)
    add("--patience-epochs", type=int, default=10)
    add("--decay-rate", type=float, default=0.1)
    add("--no-aug", action="store_true")
    add("--scale", type=float, nargs="+", default=[0.08, 1.0])
    add("--ratio", type=float, nargs="+", default=[3 / 4, 4 / 3])
    add("--hflip", type=float, default=0.5)
    add("--vflip", type=float, default=0.0)
    add("--color-jitter", type=float, default=0.4)
    add("--aa", default=None)
    add("--reprob", type=float, default=0.0)
    add("--remode", default="pixel")
    add("--recount", type=int, default=1)
    add("--smoothing", type=float, default=0.1)
    add("--train-interpolation", default="random")
    add("--seed", type=int, default=42)
    add("--worker-seeding", default="all")
    add("--log-interval", type=int, default=50)
    add("--checkpoint-hist", type=int, default=10)
    add("-j", "--workers", type=int, default=4)
    add("--pin-mem", action="store_true")
    add("--no-prefetcher", action="store_true")
    add("--device", default="cuda")
    add("--output", default="")
    add("--experiment", default="")
    add("--eval-metric", default="top1")
    return p


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, device, lr_scheduler,
                    amp_autocast=suppress):
    update_time_m, data_time_m, losses_m = utils.AverageMeter(), utils.AverageMeter(), \
        utils.AverageMeter()
    model.train()
    updates_per_epoch = len(loader)  # one update per batch: no gradient accumulation
    num_updates = epoch * updates_per_epoch
    optimizer.zero_grad()
    data_start = update_start = time.time()
    seen = 0
    for update_idx, (input, target) in enumerate(loader):
        if not args.prefetcher:  # the prefetcher has moved and normalised the batch already
            input, target = input.to(device), target.to(device)
        data_time_m.update(time.time() - data_start)
        with amp_autocast():
            loss = loss_fn(model(input), target)
        loss.backward()
        optimizer.step()
        losses_m.update(loss.item(), input.size(0))
        seen += input.size(0)
        num_updates += 1
        optimizer.zero_grad()
        now = time.time()
        update_time_m.update(now - update_start)
        update_start = now
        if update_idx % args.log_interval == 0:
            lrs = [g["lr"] for g in optimizer.param_groups]
            _logger.info(
                f"Train: {epoch} [{update_idx:>4d}/{updates_per_epoch} "
                f"({100. * update_idx / max(updates_per_epoch - 1, 1):>3.0f}%)]  "
                f"Loss: {losses_m.val:#.3g} ({losses_m.avg:#.3g})  "
                f"Time: {update_time_m.val:.3f}s, {input.size(0) / update_time_m.val:>7.2f}/s  "
                f"LR: {sum(lrs) / len(lrs):.3e}  Data: {data_time_m.val:.3f} ({data_time_m.avg:.3f})")
        lr_scheduler.step_update(num_updates=num_updates, metric=losses_m.avg)
        data_start = time.time()
    return OrderedDict([("loss", losses_m.avg)]), seen


def validate(model, loader, loss_fn, args, device, amp_autocast=suppress):
    batch_time_m, losses_m, top1_m, top5_m = (utils.AverageMeter() for _ in range(4))
    model.eval()
    last_idx = len(loader) - 1
    end = time.time()
    with torch.no_grad():
        for batch_idx, (input, target) in enumerate(loader):
            if not args.prefetcher:
                input, target = input.to(device), target.to(device)
            with amp_autocast():
                output = model(input)
                loss = loss_fn(output, target)
            acc1, acc5 = utils.accuracy(output, target, topk=(1, 5))
            losses_m.update(loss.item(), input.size(0))
            top1_m.update(acc1.item(), output.size(0))
            top5_m.update(acc5.item(), output.size(0))
            batch_time_m.update(time.time() - end)
            end = time.time()
            if batch_idx == last_idx or batch_idx % args.log_interval == 0:
                _logger.info(
                    f"Test: [{batch_idx:>4d}/{last_idx}]  Loss: {losses_m.val:>7.3f} "
                    f"({losses_m.avg:>6.3f})  Acc@1: {top1_m.val:>7.3f} ({top1_m.avg:>7.3f})  "
                    f"Acc@5: {top5_m.val:>7.3f} ({top5_m.avg:>7.3f})")
    return OrderedDict([("loss", losses_m.avg), ("top1", top1_m.avg), ("top5", top5_m.avg)])


def main() -> None:
    t0 = time.perf_counter()
    utils.setup_default_logging()
    args = parser().parse_args()
    args_text = yaml.safe_dump(args.__dict__, default_flow_style=False)
    args.prefetcher = not args.no_prefetcher
    device = utils.init_distributed_device(args)
    assert not args.distributed, "this path is single-process"
    utils.random_seed(args.seed, args.rank)

    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    model = create_model(args.model, pretrained=False, in_chans=in_chans,
                         num_classes=args.num_classes, drop_rate=args.drop,
                         drop_path_rate=args.drop_path, drop_block_rate=args.drop_block,
                         global_pool=args.gp, bn_momentum=args.bn_momentum, bn_eps=args.bn_eps)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    _logger.info(f"Model {safe_model_name(args.model)} created, "
                 f"param count:{sum(p.numel() for p in model.parameters())}")
    data_config = resolve_data_config(vars(args), model=model, verbose=True)
    model.to(device=device)

    if not args.lr:  # train.py: lr from lr_base, scaled by the global batch size
        ratio = args.batch_size * args.world_size / args.lr_base_size
        scale = args.lr_base_scale or ("sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb"))
                                       else "linear")
        args.lr = args.lr_base * (ratio ** 0.5 if scale == "sqrt" else ratio)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))

    dataset_train = create_dataset(args.dataset, root=args.data_dir, split=args.train_split,
                                   is_training=True, class_map=args.class_map,
                                   batch_size=args.batch_size, seed=args.seed)
    dataset_eval = create_dataset(args.dataset, root=args.data_dir, split=args.val_split,
                                  is_training=False, class_map=args.class_map,
                                  batch_size=args.batch_size)
    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config["interpolation"]
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size,
        is_training=True, use_prefetcher=args.prefetcher, no_aug=args.no_aug,
        re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, scale=args.scale,
        ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        auto_augment=args.aa, interpolation=train_interpolation, mean=data_config["mean"],
        std=data_config["std"], num_workers=args.workers, pin_memory=args.pin_mem,
        device=device, worker_seeding=args.worker_seeding)
    loader_eval = create_loader(
        dataset_eval, input_size=data_config["input_size"],
        batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        use_prefetcher=args.prefetcher, interpolation=data_config["interpolation"],
        mean=data_config["mean"], std=data_config["std"], num_workers=args.workers,
        crop_pct=data_config["crop_pct"], pin_memory=args.pin_mem, device=device)

    train_loss_fn = (LabelSmoothingCrossEntropy(smoothing=args.smoothing) if args.smoothing
                     else nn.CrossEntropyLoss()).to(device=device)
    validate_loss_fn = nn.CrossEntropyLoss().to(device=device)

    exp_name = args.experiment or "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"),
                                            safe_model_name(args.model),
                                            str(data_config["input_size"][-1])])
    output_dir = utils.get_outdir(args.output or "./output/train", exp_name)
    saver = utils.CheckpointSaver(model=model, optimizer=optimizer, args=args,
                                  checkpoint_dir=output_dir, recovery_dir=output_dir,
                                  decreasing=args.eval_metric == "loss",
                                  max_history=args.checkpoint_hist)
    with open(os.path.join(output_dir, "args.yaml"), "w") as f:
        f.write(args_text)

    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args),
                                                   updates_per_epoch=len(loader_train))
    _logger.info(f"Scheduled epochs: {num_epochs}. LR stepped per "
                 f"{'epoch' if lr_scheduler.t_in_epochs else 'update'}.")

    best_metric = best_epoch = None
    train_s, seen, eval_metrics = 0.0, 0, {}
    for epoch in range(num_epochs):
        if hasattr(dataset_train, "set_epoch"):
            dataset_train.set_epoch(epoch)
        t = time.perf_counter()
        train_metrics, n = train_one_epoch(epoch, model, loader_train, optimizer, train_loss_fn,
                                           args, device, lr_scheduler)
        train_s += time.perf_counter() - t
        seen += n
        eval_metrics = validate(model, loader_eval, validate_loss_fn, args, device)
        lrs = [g["lr"] for g in optimizer.param_groups]
        utils.update_summary(epoch, train_metrics, eval_metrics,
                             filename=os.path.join(output_dir, "summary.csv"),
                             lr=sum(lrs) / len(lrs), write_header=best_metric is None)
        best_metric, best_epoch = saver.save_checkpoint(epoch, metric=eval_metrics[args.eval_metric])
        lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
    if best_metric is not None:
        _logger.info(f"*** Best metric: {best_metric} (epoch {best_epoch})")
    print(json.dumps({"train_img_s": seen / train_s, "top1": eval_metrics["top1"] / 100.0,
                      "in_process_s": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
