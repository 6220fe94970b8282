# A word-level LSTM language model in the shape of pytorch/examples' word_language_model/main.py: argparse
# flags (some hyphenated, a boolean --tied), data read relative to the working directory, the model saved to
# --save, and one `| end of epoch N | ... | valid loss X | valid ppl Y` line per epoch.
import argparse
import math
import time

import data
import torch
import torch.nn as nn

parser = argparse.ArgumentParser(description="PyTorch tiny LSTM language model")
parser.add_argument("--data", type=str, default="./data/tiny", help="location of the data corpus")
parser.add_argument("--emsize", type=int, default=32, help="size of word embeddings")
parser.add_argument("--nhid", type=int, default=32, help="number of hidden units per layer")
parser.add_argument("--nlayers", type=int, default=1, help="number of layers")
parser.add_argument("--lr", type=float, default=20, help="initial learning rate")
parser.add_argument("--clip", type=float, default=0.25, help="gradient clipping")
parser.add_argument("--epochs", type=int, default=3, help="upper epoch limit")
parser.add_argument("--batch_size", type=int, default=16, metavar="N", help="batch size")
parser.add_argument("--bptt", type=int, default=16, help="sequence length")
parser.add_argument("--dropout", type=float, default=0.2, help="dropout applied to layers (0 = no dropout)")
parser.add_argument("--tied", action="store_true", help="tie the word embedding and softmax weights")
parser.add_argument("--seed", type=int, default=1111, help="random seed")
parser.add_argument("--log-interval", type=int, default=20, metavar="N", help="report interval")
parser.add_argument("--save", type=str, default="model.pt", help="path to save the final model")
parser.add_argument("--dry-run", action="store_true", help="verify the code and the model")
args = parser.parse_args()

torch.manual_seed(args.seed)
torch.set_num_threads(1)
corpus = data.Corpus(args.data)


def batchify(d, bsz):
    nbatch = d.size(0) // bsz
    return d.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


train_data = batchify(corpus.train, args.batch_size)
val_data = batchify(corpus.valid, 10)
test_data = batchify(corpus.test, 10)
ntokens = len(corpus.dictionary)


class RNNModel(nn.Module):
    def __init__(self, ntoken, ninp, nhid, nlayers, dropout, tie_weights):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout if nlayers > 1 else 0.0)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight

    def forward(self, x, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output)).view(-1, self.decoder.out_features), hidden

    def init_hidden(self, bsz):
        w = next(self.parameters())
        return (w.new_zeros(args.nlayers, bsz, args.nhid), w.new_zeros(args.nlayers, bsz, args.nhid))


model = RNNModel(ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied)
criterion = nn.NLLLoss()


def get_batch(source, i):
    seq_len = min(args.bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)


def repackage(h):
    return tuple(v.detach() for v in h)


def evaluate(source):
    model.eval()
    total, hidden = 0.0, model.init_hidden(10)
    with torch.no_grad():
        for i in range(0, source.size(0) - 1, args.bptt):
            x, y = get_batch(source, i)
            output, hidden = model(x, hidden)
            total += len(x) * criterion(torch.log_softmax(output, -1), y).item()
    return total / (len(source) - 1)


def train(epoch, lr):
    model.train()
    total, start, hidden = 0.0, time.time(), model.init_hidden(args.batch_size)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
        x, y = get_batch(train_data, i)
        model.zero_grad()
        hidden = repackage(hidden)
        output, hidden = model(x, hidden)
        loss = criterion(torch.log_softmax(output, -1), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        total += loss.item()
        if batch % args.log_interval == 0 and batch > 0:
            cur = total / args.log_interval
            print(f"| epoch {epoch:3d} | {batch:5d}/{len(train_data) // args.bptt:5d} batches | lr {lr:02.2f} | "
                  f"ms/batch {(time.time() - start) * 1000 / args.log_interval:5.2f} | loss {cur:5.2f} | "
                  f"ppl {math.exp(cur):8.2f}")
            total, start = 0.0, time.time()
        if args.dry_run:
            break


lr, best_val_loss = args.lr, None
for epoch in range(1, args.epochs + 1):
    epoch_start = time.time()
    train(epoch, lr)
    val_loss = evaluate(val_data)
    print("-" * 89)
    print(f"| end of epoch {epoch:3d} | time: {time.time() - epoch_start:5.2f}s | valid loss {val_loss:5.2f} | "
          f"valid ppl {math.exp(val_loss):8.2f}")
    print("-" * 89)
    if best_val_loss is None or val_loss < best_val_loss:
        with open(args.save, "wb") as f:
            torch.save(model.state_dict(), f)
        best_val_loss = val_loss
    else:
        lr /= 4.0

model.load_state_dict(torch.load(args.save))
test_loss = evaluate(test_data)
print("=" * 89)
print(f"| End of training | test loss {test_loss:5.2f} | test ppl {math.exp(test_loss):8.2f}")
print("=" * 89)
