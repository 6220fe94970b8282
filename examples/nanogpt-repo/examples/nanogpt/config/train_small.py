# small: still CPU-friendly, a little wider and longer than tiny
max_iters = 30
eval_interval = 10
n_layer = 2
n_head = 4
n_embd = 96
block_size = 64
batch_size = 4
vocab_size = 4096
