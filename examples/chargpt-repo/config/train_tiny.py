# a character-level model small enough for a laptop CPU (a few seconds)
out_dir = "out-tiny"
dataset = "tiny"
eval_interval = 10
eval_iters = 5
log_interval = 5
max_iters = 20
batch_size = 8
block_size = 32
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0
learning_rate = 3e-3
device = "cpu"
backend = "gloo"
