# keel: `make` builds build/keel and build/keel-bench; `make test` runs every CPU test.
# CUDA is used when nvcc is found (or CUDA=1); `make CUDA=0` builds the CPU-only keel.

BUILD     ?= build
CC        ?= gcc
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(shell command -v nvcc 2>/dev/null || ls $(CUDA_HOME)/bin/nvcc 2>/dev/null)
CUDA      ?= $(if $(NVCC),1,0)
CUARCH    ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=compute_90
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS += -I. -I$(LLHTTP_INC) -D_GNU_SOURCE -MMD -MP
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -pthread -fno-strict-aliasing $(WARN)
LDFLAGS  += -pthread -Wl,-rpath,'$$ORIGIN' -Wl,-rpath,'$$ORIGIN/..'
# libuv, PCRE2 and utf8proc are linked statically so the binary runs on the GPU machine, which has
# none of them; libcjson.so.1 is copied beside the binary (rpath $ORIGIN).
LDLIBS   += -l:libuv_a.a -l:libpcre2-8.a -l:libutf8proc.a -lcjson -lm -ldl -lrt

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# Fuzzing builds (make fuzz): clang, libFuzzer, ASan + UBSan.
ifeq ($(SAN),fuzz)
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
WARN    += -Wno-unknown-warning-option
endif

ifeq ($(CUDA),1)
CPPFLAGS  += -DKEEL_CUDA -I$(CUDA_HOME)/include
NVCCFLAGS ?= -O3 -g -lineinfo
NVCCFLAGS += -std=c++17 $(CUARCH) -I. -DKEEL_CUDA -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-fPIC -MMD -MP
LDFLAGS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64
LDLIBS    += -lcublasLt -lcublas -lcudart_static -lstdc++
CUDA_SRC  := $(wildcard kernels/cuda/*.cu) $(wildcard kernels/cuda/*.c) $(wildcard */*_cuda.c)
else
CUDA_SRC  :=
endif

# Every C file of the library modules; the CUDA-only ones (kernels/cuda/, *_cuda.c) join when CUDA=1.
LIB_SRC := $(filter-out server/main.c %_cuda.c,$(wildcard common/*.c memory/*.c kernels/*.c \
             kernels/cpu/*.c models/*.c server/*.c)) $(CUDA_SRC)
LIB_OBJ := $(patsubst %,$(BUILD)/obj/%.o,$(LIB_SRC))
LLHTTP_OBJ := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
LIB     := $(BUILD)/libkeel.a

BENCH_SRC := $(wildcard bench/*.c)
UNIT_SRC  := tests/runner.c $(wildcard tests/unit/*.c)
GPU_SRC   := tests/runner.c $(wildcard tests/gpu/*.c) $(wildcard tests/gpu/*.cu)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

.PHONY: all test test-unit test-gpu asan format lint serve clean setup fuzz fuzz-bins playgrounds
all: $(BUILD)/keel $(BUILD)/keel-bench $(BUILD)/tests/unit $(BUILD)/libcjson.so.1

$(BUILD)/obj/%.c.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) -O2 -fPIC -I$(LLHTTP_INC) -c $< -o $@

$(LIB): $(LIB_OBJ) $(LLHTTP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libcjson.so.1:
	@mkdir -p $(@D)
	cp -L $$(ldconfig -p | awk '/libcjson.so.1 /{print $$NF; exit}') $@

$(BUILD)/keel: $(BUILD)/obj/server/main.c.o $(LIB) $(BUILD)/libcjson.so.1
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/obj/server/main.c.o $(LIB) $(LDLIBS)

$(BUILD)/keel-bench: $(patsubst %,$(BUILD)/obj/%.o,$(BENCH_SRC)) $(LIB) $(BUILD)/libcjson.so.1
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

# Test binaries keep every registered test: link the objects, not an archive.
$(BUILD)/tests/unit: $(patsubst %,$(BUILD)/obj/%.o,$(UNIT_SRC)) $(LIB) $(BUILD)/libcjson.so.1
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

$(BUILD)/tests/gpu: $(patsubst %,$(BUILD)/obj/%.o,$(GPU_SRC)) $(LIB) $(BUILD)/libcjson.so.1
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

# Kernel playgrounds (bench/kernels/*.cu), one program each, into build/playgrounds/.
PLAY_SRC := $(wildcard bench/kernels/*.cu)
playgrounds: $(patsubst bench/kernels/%.cu,$(BUILD)/playgrounds/%,$(PLAY_SRC))

$(BUILD)/playgrounds/%: bench/kernels/%.cu $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -o $@ $< $(LIB) -L$(CUDA_HOME)/lib64 -Xlinker -rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas

# libFuzzer targets (tests/fuzz/fuzz_*.c), built with clang into build/fuzzers/fuzz/.
fuzz:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzzers CC=clang CUDA=0 SAN=fuzz fuzz-bins

fuzz-bins: $(FUZZ_BIN)

$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.c.o $(LIB) $(BUILD)/libcjson.so.1
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)

setup:
	@scripts/setup

# The README's test command: set up, build, run the unit tests and the end-to-end tests.
test: setup
	@$(MAKE) --no-print-directory all
	@tests/run $(BUILD)

test-unit: $(BUILD)/tests/unit
	@$(BUILD)/tests/unit

# On a GPU machine: kernels against the CPU reference, the promises, the model against goldens.
test-gpu: all $(BUILD)/tests/gpu
	@$(BUILD)/tests/gpu

# The CPU test suite under AddressSanitizer and UBSan (CPU-only build in build/asan).
asan: setup
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan CUDA=0 SAN=1 all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 tests/run $(BUILD)/asan

# The server on the built-in default model (GPU if present, else CPU with a tiny dummy model).
serve: setup all
	$(BUILD)/keel serve

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

lint:
	@scripts/lint

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
