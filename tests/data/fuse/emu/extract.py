# Cuts the kernels out of kernels/cuda/gemv.cu and kernels/cuda/fused_qk_rope_kv.cu (and the
# activation helper of kernels/cuda/fused_act.h) for the host emulation (emu.cpp): drops the
# includes, the inline-asm helpers (emu.cpp emulates them), the tuner's diff kernel and the
# launchers.
import re
import sys

root = sys.argv[1]
out = open(sys.argv[2], "w")

act = open(root + "/kernels/cuda/fused_act.h").read()
act = act[act.index("// silu(g) * u") : act.index("#endif")]
out.write(act)

s = open(root + "/kernels/cuda/gemv.cu").read()
s = s[s.index("// ---- kernels") : s.index("// ---- launchers")]
a = s.index("__device__ __forceinline__ uint4 kc_gemv_ld_stream")
b = s.index("// Eight bf16 from p[0..7]")
s = s[:a] + s[b:]
a = s.index("// d += A (16 x 16")
b = s.index("// One 16-byte slice of row g")
s = s[:a] + s[b:]
s = s[: s.index("// Relative L2 difference")]
out.write(s)

s = open(root + "/kernels/cuda/fused_qk_rope_kv.cu").read()
s = s[s.index("#define KC_QRK_WARPS") : s.index("// ---- launchers")]
out.write(s)
