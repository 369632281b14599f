"""Scaling out on existing engines: ``ddp`` (DistributedDataParallel under torchrun) for training,
``ray`` (Ray Data pipelines, optional extra ``ray``) for scoring, embedding and validation."""
