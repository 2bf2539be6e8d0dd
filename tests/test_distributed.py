"""Two CPU processes on gloo (DDP, then FSDP2) train exactly like one process with the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from synthetic_manifest import arithmetic_rows, write_manifest
from test_training import CONFIGS, losses, tiny_config

from diffuspeech.training.trainer import Trainer

STRATEGIES = ("ddp", "fsdp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, cfg_yaml: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")  # the trainer joins it (as under torchrun)
    try:
        for strategy in STRATEGIES:
            cfg = OmegaConf.create(cfg_yaml)
            cfg.train.strategy = strategy
            Trainer(cfg, base_dir=CONFIGS, out=f"{out}/{strategy}").run()
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    manifest = write_manifest(tmp_path / "train.jsonl", arithmetic_rows(24))
    # one process: the global batch of 4 in 2 accumulation steps of 2
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(tiny_config(manifest, steps=(3, 2), grad_accum=2), base_dir=CONFIGS, out=tmp_path / "one").run()
    finally:
        torch.set_num_threads(n)
    # two processes: the same global batch, 2 sequences each, no accumulation
    double = tiny_config(manifest, steps=(3, 2), grad_accum=1)
    mp.start_processes(worker, args=(2, free_port(), OmegaConf.to_yaml(double), str(tmp_path / "two")), nprocs=2,
                       join=True, start_method="spawn")
    one = losses(tmp_path / "one")
    assert sorted(one) == [1, 2, 3, 4, 5]
    for strategy in STRATEGIES:
        two = losses(tmp_path / "two" / strategy)
        assert sorted(two) == sorted(one), strategy
        for step in one:
            assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), (strategy, step)
        assert (tmp_path / "two" / strategy / "model" / "model.safetensors").is_file()
