"""Tiny nanoGPT-style trainer: a config file plus key=value overrides; DDP under torchrun; CPU or CUDA.

    torchrun --standalone --nproc_per_node=2 train.py config/train_tiny.py out_dir=out/run1 seed=1
"""

import glob
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from model import GPT

# ---- defaults: any of these can be set by the config file or by key=value
out_dir = "out"
data_dir = "data/fineweb10B"
seed = 1337
max_iters = 20
eval_interval = 10
batch_size = 4
block_size = 64
n_layer = 2
n_head = 2
n_embd = 64
vocab_size = 50304
learning_rate = 3e-3
device = "auto"  # auto | cpu | cuda
wandb_log = False
wandb_project = "nanogpt-example"
wandb_group = ""
wandb_run_name = ""
# ---- knobs for testing how failures are reported
fail_at_iter = -1
fail_exit_code = 3
fail_rank = -1
oom_at_iter = -1
sleep_per_iter = 0.0

exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configurator.py")).read())
config = {k: v for k, v in dict(globals()).items()
          if not k.startswith("_") and isinstance(v, (int, float, bool, str)) and k != "config"}

ddp = "RANK" in os.environ
use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
if ddp:
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])
else:
    rank, world, local_rank = 0, 1, 0
dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
if use_cuda:
    torch.cuda.set_device(dev)
master = rank == 0
torch.manual_seed(seed * 1000 + rank)


def log(msg: str) -> None:
    if master:
        print(msg, flush=True)


def load_tokens(split: str) -> torch.Tensor:
    files = sorted(glob.glob(os.path.join(data_dir, f"fineweb_{split}_*.bin")))
    if not files:
        sys.exit(f"train.py: no fineweb_{split}_*.bin shards in data_dir={data_dir}")
    parts = []
    for path in files:
        with open(path, "rb") as fh:
            header = torch.frombuffer(bytearray(fh.read(1024)), dtype=torch.int32)
            if int(header[0]) != 20240520:
                sys.exit(f"train.py: {path} is not a FineWeb shard (bad magic)")
            raw = torch.frombuffer(bytearray(fh.read()), dtype=torch.int16)
        parts.append(raw.to(torch.int64) & 0xFFFF)
    return torch.cat(parts) % vocab_size  # toy configs use a small vocabulary: fold the ids into it


def batch(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(len(tokens) - block_size - 1, (batch_size,))
    x = torch.stack([tokens[i:i + block_size] for i in ix])
    y = torch.stack([tokens[i + 1:i + 1 + block_size] for i in ix])
    return x.to(dev), y.to(dev)


if wandb_log and master:
    try:
        import wandb
    except ImportError:
        sys.exit("train.py: wandb_log=True but wandb is not installed")
    wandb.init(project=wandb_project, group=wandb_group or None, name=wandb_run_name or None, config=config)

train_tokens, val_tokens = load_tokens("train"), load_tokens("val")
model = GPT(vocab_size, block_size, n_layer, n_head, n_embd).to(dev)
ddp_model = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
os.makedirs(out_dir, exist_ok=True)
log(f"training {sum(p.numel() for p in model.parameters())} parameters on {world} x {dev.type}, "
    f"{len(train_tokens)} train tokens, out_dir={out_dir}")
metrics = open(os.path.join(out_dir, "metrics.jsonl"), "a") if master else None
t0 = time.time()
loss = val_loss = float("nan")
for it in range(1, max_iters + 1):
    if it == fail_at_iter and fail_rank in (-1, rank):
        print(f"rank {rank}: failing on purpose at iter {it} with exit code {fail_exit_code}", flush=True)
        sys.exit(fail_exit_code)
    if it == oom_at_iter:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (simulated by oom_at_iter)")
    x, y = batch(train_tokens)
    loss_t = ddp_model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss_t.backward()
    optimizer.step()
    loss = loss_t.item()
    if sleep_per_iter:
        time.sleep(sleep_per_iter)
    if it % eval_interval == 0 or it == max_iters:
        with torch.no_grad():
            val_loss = model(*batch(val_tokens)).item()
        log(f"iter {it}: loss {loss:.4f} val {val_loss:.4f} ({time.time() - t0:.1f}s)")
        if master:
            metrics.write(json.dumps({"iter": it, "loss": loss, "val_loss": val_loss,
                                      "elapsed": round(time.time() - t0, 3)}) + "\n")
            metrics.flush()
            if wandb_log:
                wandb.log({"loss": loss, "val_loss": val_loss}, step=it)

if master:
    torch.save({"model": model.state_dict(), "config": config, "iter": max_iters}, os.path.join(out_dir, "ckpt.pt"))
    with open(os.path.join(out_dir, "final.json"), "w") as fh:
        json.dump({"iters": max_iters, "loss": loss, "val_loss": val_loss, "world_size": world,
                   "seconds": round(time.time() - t0, 3), "config": config}, fh, indent=1)
    log(f"done: wrote {out_dir}/ckpt.pt")
if ddp:
    dist.destroy_process_group()
