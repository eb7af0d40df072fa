"""One GPU's device-to-device copy rate in GB/s (bytes read + written, 1 GiB buffers, 10 copies
after 3 warm-ups): the memory bandwidth the rooflines use (kernels/gpu_e2e.sh, gpu_node.sh)."""
import torch

a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10):
    b.copy_(a)
e.record()
e.synchronize()
print(f"{2 * (1 << 30) * 10 / (s.elapsed_time(e) * 1e-3) / 1e9:.0f}")
