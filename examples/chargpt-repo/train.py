"""Trains the character-level GPT of model.py, on one process or under torchrun (DDP).

    python train.py config/train_tiny.py
    torchrun --standalone --nproc_per_node=2 train.py config/train_tiny.py --max_iters=40

Every default below can be changed by a config file or a --key=value argument (see configurator.py);
an unknown key is an error. Data: data/<dataset>/train.bin and val.bin (uint16 ids), meta.pkl for the
vocabulary size. Output: out_dir/ckpt.pt.
"""

import os
import pickle
import time

import numpy as np
import torch
import torch.distributed as dist
from model import GPT, GPTConfig
from torch.nn.parallel import DistributedDataParallel

# -- defaults (the configurator may change any of them)
out_dir = "out"
eval_interval = 100
log_interval = 10
eval_iters = 20
always_save_checkpoint = True
wandb_log = False
wandb_project = "chargpt"
wandb_run_name = "run"
dataset = "tiny"
batch_size = 16
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
learning_rate = 1e-3
max_iters = 500
warmup_iters = 10
min_lr = 1e-4
grad_clip = 1.0
device = "cuda"
backend = "nccl"
exec(open("configurator.py").read())
config = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}

ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    dist.init_process_group(backend=backend)
    rank, local_rank, world = dist.get_rank(), int(os.environ["LOCAL_RANK"]), dist.get_world_size()
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
else:
    rank, world = 0, 1
master = rank == 0
torch.manual_seed(1337 + rank)
if master:
    os.makedirs(out_dir, exist_ok=True)

data_dir = os.path.join("data", dataset)
with open(os.path.join(data_dir, "meta.pkl"), "rb") as f:
    vocab_size = pickle.load(f)["vocab_size"]


def get_batch(split):
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x.to(device), y.to(device)


model = GPT(GPTConfig(vocab_size, block_size, n_layer, n_head, n_embd, dropout)).to(device)
raw_model = model
if ddp:
    model = DistributedDataParallel(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)


@torch.no_grad()
def estimate_loss():
    model.eval()
    out = {}
    for split in ("train", "val"):
        losses = torch.tensor([raw_model(*get_batch(split))[1].item() for _ in range(eval_iters)])
        out[split] = losses.mean().item()
    model.train()
    return out


if master:
    print(f"{raw_model.parameters_count():,} parameters, {world} process(es), dataset {dataset}")
t0 = time.time()
for it in range(max_iters + 1):
    for group in optimizer.param_groups:
        group["lr"] = GPT.lr_at(it, learning_rate, warmup_iters, max_iters, min_lr)
    if it % eval_interval == 0 and master:
        losses = estimate_loss()
        print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if always_save_checkpoint or it == max_iters:
            torch.save({"model": raw_model.state_dict(), "config": config, "iter": it},
                       os.path.join(out_dir, "ckpt.pt"))
    if it == max_iters:
        break
    x, y = get_batch("train")
    _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if it % log_interval == 0 and master:
        print(f"iter {it}: loss {loss.item():.4f}, time {(time.time() - t0) * 1000:.2f}ms")
        t0 = time.time()

if ddp:
    # rank 0 evaluates and saves at the last step while the others are done: they wait for it here, so no rank
    # leaves (closing its gloo/NCCL connections) while another one still holds the process group
    dist.barrier()
    dist.destroy_process_group()
