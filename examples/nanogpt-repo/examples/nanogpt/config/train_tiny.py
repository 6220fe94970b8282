# tiny: a few seconds on a CPU
max_iters = 20
eval_interval = 10
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
batch_size = 4
vocab_size = 4096
