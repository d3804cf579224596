#!/usr/bin/env python3
"""Writes the allocation traces in benches/traces/ for `dcmem replay`, the same bytes every run.

    python3 scripts/make-traces.py [--seed N] [--out DIR]

- random.csv: RMM's random-allocations pattern in RMM's logging CSV;
- training.jsonl: training steps of a small GPT, in dcmem's JSON Lines;
- inference.jsonl: an inference server batching requests, in dcmem's JSON Lines.

benches/traces/README.md says what each models. Random numbers come from SplitMix64 seeded with
--seed (default 2024), not from Python's `random`, so the files do not depend on the Python
version.
"""
import argparse
import json
import pathlib

MASK = (1 << 64) - 1


class SplitMix64:
    """Steele, Lea & Flood (2014): the generator the Rust benches use as well."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def unit(self):
        """Uniform in [0, 1)."""
        return (self.next() >> 11) / float(1 << 53)

    def below(self, n):
        """Uniform in range(n)."""
        return ((self.next() >> 32) * n) >> 32

    def between(self, lo, hi):
        """Uniform in lo..=hi."""
        return lo + self.below(hi - lo + 1)


# --- RMM's random allocations --------------------------------------------------------------

RANDOM = dict(allocations=10_000, max_size=1 << 20, live_cap=256 << 20, allocate_probability=0.73)


def random_trace(rng):
    """RMM's `random_allocations` benchmark: sizes uniform in 1..=max_size; each step allocates
    with probability 0.73 (unless the live bytes would pass the cap) or else frees a uniformly
    chosen live allocation; what is left is freed at the end. Pointers are handed out like a
    bump allocator's and reused, last freed first, as a real allocator's addresses are."""
    p = RANDOM
    rows, live, free_addresses = [], [], []
    live_bytes, made, next_address, t = 0, 0, 0x7F0000000000, 1_700_000_000.0
    size = 0

    def emit(action, address, nbytes):
        nonlocal t
        t += (1 + rng.below(40)) * 1e-6
        rows.append(f"1,{t:.6f},{action},{address:#x},{nbytes},0x0")

    while made < p["allocations"]:
        if size == 0:
            size = rng.between(1, p["max_size"])
        must_free = live_bytes + size > p["live_cap"]
        if live and (must_free or rng.unit() >= p["allocate_probability"]):
            i = rng.below(len(live))
            address, nbytes = live[i]
            live[i] = live[-1]
            live.pop()
            live_bytes -= nbytes
            free_addresses.append(address)
            emit("deallocate", address, nbytes)
            continue
        if free_addresses:
            address = free_addresses.pop()
        else:
            address = next_address
            next_address += 1 << 20
        live.append((address, size))
        live_bytes += size
        emit("allocate", address, size)
        made += 1
        size = 0
    while live:
        address, nbytes = live.pop(rng.below(len(live)))
        emit("deallocate", address, nbytes)
    return "Thread,Time,Action,Pointer,Size,Stream\n" + "\n".join(rows) + "\n"


# --- JSON Lines writer ----------------------------------------------------------------------


class Events:
    """Events in dcmem's JSON Lines, with ids from a counter and times that advance a little
    per event (and by `work` nanoseconds where the model computes)."""

    def __init__(self, rng, device):
        self.rng, self.device = rng, device
        self.lines, self.t, self.next_id, self.sizes = [], 0, 1, {}

    def alloc(self, nbytes, thread=1):
        buffer = self.next_id
        self.next_id += 1
        self.sizes[buffer] = nbytes
        self._emit("alloc", buffer, nbytes, thread)
        return buffer

    def free(self, buffer, thread=1):
        self._emit("free", buffer, self.sizes.pop(buffer), thread)

    def work(self, ns):
        self.t += ns

    def _emit(self, op, buffer, nbytes, thread):
        self.t += 200 + self.rng.below(800)
        event = dict(t_ns=self.t, thread=thread, op=op, id=buffer, bytes=nbytes, device=self.device)
        self.lines.append(json.dumps(event, separators=(",", ":")))

    def text(self):
        return "\n".join(self.lines) + "\n"


# --- a training step of a small GPT ---------------------------------------------------------

GPT = dict(layers=6, d_model=384, heads=6, seq=256, batch=4, vocab=8192, steps=8, bytes_per_value=4)


def training_trace(rng):
    """Training steps of a small GPT (shapes in GPT, fp32), as PyTorch's allocator sees them:

    - parameters allocated once (per layer: two layer norms, the QKV and output projections, the
      MLP's two matrices, each weight and bias its own tensor; token and position embeddings,
      final layer norm);
    - each step: `zero_grad(set_to_none=True)` frees the gradients; the forward pass allocates
      each layer's activations, keeping those backward needs and freeing temporaries at once;
      the loss allocates the logits; the backward pass walks the layers in reverse, allocating
      each activation's gradient, freeing it once used, freeing the saved activations, and
      allocating each parameter's gradient;
    - the optimizer (Adam) allocates its two moment buffers per parameter at its first step and
      keeps them, and allocates one temporary per parameter per step."""
    g = GPT
    e = Events(rng, "synthetic:0")
    v, B, T, C, H, V = g["bytes_per_value"], g["batch"], g["seq"], g["d_model"], g["heads"], g["vocab"]
    shapes = [("wte", V * C), ("wpe", T * C)]
    for layer in range(g["layers"]):
        shapes += [(f"h{layer}.{n}", s) for n, s in [
            ("ln1.w", C), ("ln1.b", C), ("qkv.w", C * 3 * C), ("qkv.b", 3 * C), ("proj.w", C * C), ("proj.b", C),
            ("ln2.w", C), ("ln2.b", C), ("fc.w", C * 4 * C), ("fc.b", 4 * C), ("out.w", 4 * C * C), ("out.b", C)]]
    shapes += [("ln_f.w", C), ("ln_f.b", C)]
    params = {name: e.alloc(n * v) for name, n in shapes}
    grads, moments = {}, {}
    act = B * T * C * v
    # Each layer's forward ops: (activation bytes, kept for backward).
    layer_ops = [(act, True), (3 * act, True), (B * H * T * T * v, False), (B * H * T * T * v, True),
                 (act, True), (act, True), (act, True), (4 * act, True), (4 * act, True), (act, True)]
    for step in range(g["steps"]):
        for name in list(grads):
            e.free(grads.pop(name))
        x = e.alloc(act)  # token + position embedding
        saved = [[x]]
        for _ in range(g["layers"]):
            kept = []
            for nbytes, keep in layer_ops:
                out = e.alloc(nbytes)
                e.work(20_000 + rng.below(20_000))
                (kept.append(out) if keep else e.free(out))
            saved.append(kept)
        logits = e.alloc(B * T * V * v)
        loss = e.alloc(v)
        e.work(50_000)
        # Backward: the loss's gradient, the logits' gradient, then the layers in reverse.
        d_logits = e.alloc(B * T * V * v)
        e.free(loss)
        e.free(logits)
        grads["wte"] = e.alloc(V * C * v)
        d_x = e.alloc(act)
        e.free(d_logits)
        for layer in reversed(range(g["layers"])):
            for (nbytes, _), out in zip(reversed([op for op in layer_ops if op[1]]), reversed(saved[layer + 1])):
                d_out = e.alloc(nbytes)
                e.work(30_000 + rng.below(30_000))
                e.free(out)
                e.free(d_out)
            for name, n in shapes:
                if name.startswith(f"h{layer}."):
                    grads[name] = e.alloc(n * v)
            d_prev = e.alloc(act)
            e.free(d_x)
            d_x = d_prev
        for out in saved[0]:
            e.free(out)
        e.free(d_x)
        for name, n in shapes:
            if name not in grads:
                grads[name] = e.alloc(n * v)
        # Adam: moments at the first step, one temporary per parameter each step.
        for name, n in shapes:
            if step == 0:
                moments[name] = (e.alloc(n * v), e.alloc(n * v))
            tmp = e.alloc(n * v)
            e.free(tmp)
        e.work(100_000)
    for name in list(grads):
        e.free(grads.pop(name))
    for m, s in moments.values():
        e.free(m)
        e.free(s)
    for buffer in params.values():
        e.free(buffer)
    return e.text()


# --- an inference server ----------------------------------------------------------------------

SERVER = dict(requests=120, max_batch=16, layers=8, d_model=512, vocab=32000, block_tokens=16, bytes_per_value=2,
              prompt=(16, 1024), output=(16, 256), arrival_steps=(0, 6))


def inference_trace(rng):
    """An inference server with continuous batching (fp16, shapes in SERVER): requests arrive
    every few decode steps with a random prompt and output length; up to max_batch run at once.
    A request's KV cache grows in blocks of block_tokens tokens (a new block whenever its
    tokens fill the last), and all its blocks are freed when it finishes. Each step allocates
    and frees its activations (prefill: the new prompts' tokens; decode: one token per running
    request) and its logits. The API thread (2) allocates each request's output buffer on
    arrival; the engine thread (1) frees it when the request finishes."""
    s = SERVER
    e = Events(rng, "synthetic:0")
    v, C = s["bytes_per_value"], s["d_model"]
    kv_block = 2 * s["layers"] * C * v * s["block_tokens"]
    pending = []
    for r in range(s["requests"]):
        pending.append(dict(id=r, prompt=rng.between(*s["prompt"]), output=rng.between(*s["output"]),
                            wait=rng.between(*s["arrival_steps"])))
    running, queued = [], []
    while pending or running or queued:
        # Arrivals: the API thread takes the request and allocates its output buffer.
        while pending and pending[0]["wait"] == 0:
            req = pending.pop(0)
            req["out"] = e.alloc(req["output"] * 4, thread=2)
            req["blocks"], req["tokens"], req["made"] = [], 0, 0
            queued.append(req)
        if pending:
            pending[0]["wait"] -= 1
        # Admission and prefill.
        prefill = 0
        while queued and len(running) < s["max_batch"]:
            req = queued.pop(0)
            prefill += req["prompt"]
            req["tokens"] = req["prompt"]
            req["blocks"] = [e.alloc(kv_block) for _ in range(-(-req["prompt"] // s["block_tokens"]))]
            running.append(req)
        if not running:
            e.work(1_000_000)
            continue
        tokens = prefill + len(running)
        hidden = e.alloc(tokens * C * v)
        mlp = e.alloc(tokens * 4 * C * v)
        e.work(200_000 + tokens * 50)
        e.free(mlp)
        logits = e.alloc(len(running) * s["vocab"] * v)
        e.free(hidden)
        e.work(50_000)
        e.free(logits)
        # Each running request made a token: grow its KV cache; finish the ones done.
        for req in list(running):
            req["made"] += 1
            req["tokens"] += 1
            if req["tokens"] > len(req["blocks"]) * s["block_tokens"]:
                req["blocks"].append(e.alloc(kv_block))
            if req["made"] == req["output"]:
                for block in req["blocks"]:
                    e.free(block)
                e.free(req["out"])
                running.remove(req)
    return e.text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent / "benches" / "traces")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make, salt in [("random.csv", random_trace, 1), ("training.jsonl", training_trace, 2),
                             ("inference.jsonl", inference_trace, 3)]:
        text = make(SplitMix64(args.seed * 1000 + salt))
        path = args.out / name
        path.write_text(text)
        print(f"{path}: {text.count(chr(10))} lines, {len(text)} bytes")


if __name__ == "__main__":
    main()
