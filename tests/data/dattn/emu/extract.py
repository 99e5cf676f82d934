# Cuts the kernels out of kernels/cuda/attention_dec.cu for the host emulation (emu.cpp): drops the
# includes, the inline-asm helpers (emu.cpp emulates them) and the launchers; keeps the row merge
# and the fused combine's tickets.
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
s = open(root + "/kernels/cuda/attention_dec.cu").read()
s = re.sub(r"#include [^\n]*\n", "", s)
a = s.index("static __device__ __forceinline__ uint32_t kc_dec_ld32")
b = s.index("// The merge of one output row")
s = s[:a] + s[b:]
s = s[: s.index("// ---- launchers")]
s = s.replace("extern __shared__ __align__(16) unsigned char kc_dec_smem_raw[];", "")
open(sys.argv[2] if len(sys.argv) > 2 else "kernel_body.inc", "w").write(s)
